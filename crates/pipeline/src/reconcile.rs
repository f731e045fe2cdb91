//! Reconciliation: the compacted topics are the authority for what the
//! graph must hold, and Postgres for what the mastery topic must hold.
//!
//! Order matters for running beside live workers. Postgres is read first
//! (mastery rows, then the keys still waiting in the outbox), then the graph,
//! then the topics' high watermarks are snapshotted and the topics read up
//! to them: every edge the graph sink had written when the graph was read
//! came from a record below those watermarks, so nothing the sink wrote is
//! mistaken for drift. Repairs use the same idempotent writes as the sink;
//! mastery repairs overwrite only an equal or older version, so an edge a
//! newer event wrote meanwhile is never rolled back.
//!
//! Memory: the expected state is held in maps keyed by id, and the graph
//! is read in pages but also held for the diff, so memory grows linearly:
//! `make bench` measured a 153 MiB peak for 198,000 edges (about 0.75 KiB
//! per edge, all in). Past a few million edges the same diff would stream
//! both sides in key order; until then `id_prefix` reconciles in slices.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use novyra_core::{keys, ConceptUpserted, MasteryUpdated, PrerequisiteLinked};
use novyra_graph::GraphBatch;
use novyra_kafka::rdkafka::consumer::{Consumer, StreamConsumer};
use novyra_kafka::rdkafka::message::Message;
use novyra_kafka::rdkafka::producer::FutureRecord;
use novyra_kafka::rdkafka::{Offset, TopicPartitionList};
use novyra_registry::{Codec, EventKind};
use serde::{Deserialize, Serialize};

use crate::run::WorkerError;
use crate::Config;

/// What to reconcile.
#[derive(Debug, Clone, Default)]
pub struct ReconcileOptions {
    /// Report without writing.
    pub dry_run: bool,
    /// Only ids starting with this (concepts, and users for mastery); for a
    /// graph shared by several pipelines, as in tests. Empty: everything.
    pub id_prefix: String,
}

/// Drift found (and repaired unless dry-run), by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// Concepts on the topic, not in the graph.
    pub missing_concept: u64,
    /// Concepts in the graph that no topic record explains.
    pub extra_concept: u64,
    /// Concepts whose name, domain or difficulty differ.
    pub stale_concept: u64,
    /// Prerequisite links on the topic, not in the graph.
    pub missing_link: u64,
    /// Prerequisite links in the graph, not on the topic.
    pub extra_link: u64,
    /// Mastery edges on the topic, not in the graph.
    pub missing_mastery: u64,
    /// Mastery edges in the graph, not on the topic.
    pub extra_mastery: u64,
    /// Mastery edges with an older version or another score.
    pub stale_mastery: u64,
    /// Mastery edges newer in the graph than the snapshot (left alone).
    pub newer_in_graph: u64,
    /// Postgres mastery rows missing from the topic or newer there, republished.
    pub republished: u64,
    /// Records read from the compacted topics.
    pub records_read: u64,
    /// Whether repairs were written.
    pub repaired: bool,
}

impl Report {
    /// Counts by drift kind, for the table and the metrics.
    pub fn kinds(&self) -> [(&'static str, u64); 10] {
        [
            ("missing_concept", self.missing_concept),
            ("extra_concept", self.extra_concept),
            ("stale_concept", self.stale_concept),
            ("missing_link", self.missing_link),
            ("extra_link", self.extra_link),
            ("missing_mastery", self.missing_mastery),
            ("extra_mastery", self.extra_mastery),
            ("stale_mastery", self.stale_mastery),
            ("newer_in_graph", self.newer_in_graph),
            ("republished", self.republished),
        ]
    }

    /// Total drift (newer-in-graph edges are not drift).
    pub fn drift(&self) -> u64 {
        self.kinds()
            .iter()
            .filter(|(k, _)| *k != "newer_in_graph")
            .map(|(_, n)| n)
            .sum()
    }
}

/// The expected mastery edge: score, version, event time.
type Edge = (f64, i64, i64);

/// Reads `topic` from the beginning up to the high watermarks taken now,
/// calling `f(key, value)` in offset order per partition.
async fn read_to_snapshot(
    cfg: &Config,
    topic: &str,
    mut f: impl FnMut(&[u8], Option<&[u8]>),
) -> Result<u64, WorkerError> {
    let consumer: StreamConsumer = cfg.kafka().reader_config().create()?;
    let marks = {
        let kafka = cfg.kafka();
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let c: novyra_kafka::rdkafka::consumer::BaseConsumer =
                kafka.reader_config().create()?;
            novyra_kafka::lag::watermarks(&c, &topic, Duration::from_secs(30))
        })
        .await
        .map_err(|e| WorkerError::Join(e.to_string()))??
    };
    let mut end: HashMap<i32, i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for (p, low, high) in marks {
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Beginning)?;
            end.insert(p, high);
        }
    }
    if end.is_empty() {
        return Ok(0);
    }
    consumer.assign(&tpl)?;
    let mut n = 0;
    while !end.is_empty() {
        let m = tokio::time::timeout(Duration::from_secs(60), consumer.recv())
            .await
            .map_err(|_| WorkerError::Join(format!("no records from {topic} for 60 s")))??;
        let p = m.partition();
        let Some(&high) = end.get(&p) else {
            continue;
        };
        if m.offset() < high {
            f(m.key().unwrap_or_default(), m.payload());
            n += 1;
        }
        if m.offset() + 1 >= high {
            end.remove(&p);
        }
    }
    Ok(n)
}

/// Runs one reconciliation; see the module doc.
pub async fn reconcile(cfg: &Config, o: &ReconcileOptions) -> Result<Report, WorkerError> {
    let started = Instant::now();
    let p = o.id_prefix.as_str();
    let graph = cfg.graph()?;
    let codec = Codec::new(&cfg.registry())?;

    // 0. Postgres first, then what is still in the outbox (on its way to
    // the topic): a row read here and relayed since is below the topic
    // watermarks taken later, so only rows the topic truly lacks remain.
    let store = novyra_store::Store::new(&cfg.store())?;
    let pg_rows = store.mastery_rows().await?;
    let pending = store.outbox_pending_keys().await?;

    // 1. The graph as it is.
    let nodes = graph.concept_nodes(p).await?;
    let links: HashSet<(String, String)> = graph.prerequisite_edges(p).await?.into_iter().collect();
    let edges: HashMap<(String, String), (f64, i64)> = graph
        .mastery_edge_states(p)
        .await?
        .into_iter()
        .map(|e| ((e.user, e.concept), (e.score, e.version)))
        .collect();

    // 2. The topics up to a snapshot taken after that.
    let mut report = Report::default();
    let mut raw: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
    report.records_read += read_to_snapshot(cfg, &cfg.topic("concepts"), |k, v| {
        raw.push((k.to_vec(), v.map(<[u8]>::to_vec)))
    })
    .await?;
    let mut concepts: BTreeMap<String, ConceptUpserted> = BTreeMap::new();
    for (k, v) in raw.drain(..) {
        let key = String::from_utf8_lossy(&k).into_owned();
        match v {
            None => {
                concepts.remove(&key);
            }
            Some(v) => {
                if let Ok(d) = codec
                    .decode::<ConceptUpserted>(EventKind::Concept, &v)
                    .await
                {
                    concepts.insert(key, d.value);
                }
            }
        }
    }
    concepts.retain(|id, _| id.starts_with(p));
    report.records_read += read_to_snapshot(cfg, &cfg.topic("prerequisites"), |k, v| {
        raw.push((k.to_vec(), v.map(<[u8]>::to_vec)))
    })
    .await?;
    let mut want_links: HashSet<(String, String)> = HashSet::new();
    for (k, v) in raw.drain(..) {
        let key = String::from_utf8_lossy(&k).into_owned();
        let Some((pre, con)) = keys::parse_prerequisite_key(&key) else {
            continue;
        };
        let pair = (pre.to_owned(), con.to_owned());
        match v {
            None => {
                want_links.remove(&pair);
            }
            Some(v) => {
                if codec
                    .decode::<PrerequisiteLinked>(EventKind::Prerequisite, &v)
                    .await
                    .is_ok()
                {
                    want_links.insert(pair);
                }
            }
        }
    }
    want_links.retain(|(_, c)| c.starts_with(p));
    let mut want_edges: HashMap<(String, String), Edge> = HashMap::new();
    report.records_read += read_to_snapshot(cfg, &cfg.topic("mastery"), |k, v| {
        raw.push((k.to_vec(), v.map(<[u8]>::to_vec)))
    })
    .await?;
    for (k, v) in raw.drain(..) {
        let key = String::from_utf8_lossy(&k).into_owned();
        let Some((u, c)) = keys::parse_mastery_key(&key) else {
            continue;
        };
        let pair = (u.to_owned(), c.to_owned());
        match v {
            None => {
                want_edges.remove(&pair);
            }
            Some(v) => {
                if let Ok(d) = codec.decode::<MasteryUpdated>(EventKind::Mastery, &v).await {
                    let m = d.value;
                    // Compaction keeps the last record, which the relay made
                    // the newest; still, never let an older one win here.
                    let newer = want_edges.get(&pair).is_none_or(|e| e.1 <= m.version);
                    if newer {
                        want_edges.insert(pair, (m.mastery, m.version, m.updated_at));
                    }
                }
            }
        }
    }
    want_edges.retain(|(u, _), _| u.starts_with(p));

    // 3. The diff.
    let mut batch = GraphBatch::default();
    let referenced: HashSet<&str> = want_links
        .iter()
        .flat_map(|(a, b)| [a.as_str(), b.as_str()])
        .chain(want_edges.keys().map(|(_, c)| c.as_str()))
        .collect();
    let have: HashMap<&str, &novyra_graph::ConceptNode> =
        nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    for (id, c) in &concepts {
        match have.get(id.as_str()) {
            None => {
                report.missing_concept += 1;
                batch.concept(c.clone());
            }
            Some(n) => {
                let same = n.name.as_deref() == Some(c.name.as_str())
                    && n.domain.as_deref() == Some(c.domain.as_str())
                    && n.difficulty.map(f64::to_bits) == Some(c.difficulty.to_bits());
                if !same {
                    report.stale_concept += 1;
                    batch.concept(c.clone());
                }
            }
        }
    }
    for n in &nodes {
        if !concepts.contains_key(&n.id) && !referenced.contains(n.id.as_str()) {
            report.extra_concept += 1;
            batch.concept_deleted(n.id.clone());
        }
    }
    let deleted: HashSet<String> = batch.concept_deletes.iter().cloned().collect();
    for l in &want_links {
        if !links.contains(l) {
            report.missing_link += 1;
            batch.link(PrerequisiteLinked {
                prerequisite_id: l.0.clone(),
                concept_id: l.1.clone(),
                linked_at: 0,
            });
        }
    }
    for l in &links {
        // Links of a deleted node go with it (and are counted with it).
        if !want_links.contains(l) && !deleted.contains(&l.0) && !deleted.contains(&l.1) {
            report.extra_link += 1;
            batch.unlink(l.0.clone(), l.1.clone());
        }
    }
    let mut repairs: Vec<(String, String, f64, i64, i64)> = Vec::new();
    for (k, (score, version, at)) in &want_edges {
        match edges.get(k) {
            None => {
                report.missing_mastery += 1;
                repairs.push((k.0.clone(), k.1.clone(), *score, *version, *at));
            }
            Some((s, v)) if v > version => {
                let _ = s;
                report.newer_in_graph += 1;
            }
            Some((s, v)) if v < version || s.to_bits() != score.to_bits() => {
                report.stale_mastery += 1;
                repairs.push((k.0.clone(), k.1.clone(), *score, *version, *at));
            }
            Some(_) => {}
        }
    }
    for k in edges.keys() {
        if !want_edges.contains_key(k) && !deleted.contains(&k.1) {
            report.extra_mastery += 1;
            batch.mastery_deleted(k.0.clone(), k.1.clone());
        }
    }

    // 4. Postgres is the truth for the mastery topic (rows read in step 0).
    let mut republish: Vec<MasteryUpdated> = Vec::new();
    for r in pg_rows {
        if !r.user_id.starts_with(p) || pending.contains(&(r.user_id.clone(), r.concept_id.clone()))
        {
            continue;
        }
        let on_topic = want_edges.get(&(r.user_id.clone(), r.concept_id.clone()));
        if on_topic.is_none_or(|e| e.1 < r.version) {
            republish.push(MasteryUpdated {
                user_id: r.user_id,
                concept_id: r.concept_id,
                mastery: r.mastery,
                version: r.version,
                attempts_total: r.attempts_total,
                attempts_correct: r.attempts_correct,
                confidence_weight: r.confidence_weight,
                last_event_id: r.last_event_id,
                updated_at: r.updated_at.timestamp_millis(),
            });
        }
    }
    report.republished = republish.len() as u64;

    if !o.dry_run {
        graph.write(&batch).await?;
        graph.repair_mastery(&repairs).await?;
        let producer = cfg.kafka().producer()?;
        let topic = cfg.topic("mastery");
        for m in &republish {
            let bytes = codec
                .encode(&topic, EventKind::Mastery, m)
                .await
                .map_err(|e| WorkerError::Join(e.to_string()))?;
            let key = keys::mastery_key(&m.user_id, &m.concept_id);
            producer
                .send(
                    FutureRecord::to(&topic).key(&key).payload(&bytes),
                    Duration::from_secs(60),
                )
                .await
                .map_err(|(e, _)| e)?;
        }
        report.repaired = true;
    }
    tracing::info!(
        drift = report.drift(),
        dry_run = o.dry_run,
        seconds = started.elapsed().as_secs_f64(),
        "reconciliation done"
    );
    Ok(report)
}
