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

use crate::changes::{decode_record, Change};
use novyra_core::{keys, ConceptUpserted, MasteryUpdated, PrerequisiteLinked};
use novyra_graph::GraphBatch;
use novyra_kafka::rdkafka::consumer::{Consumer, StreamConsumer};
use novyra_kafka::rdkafka::message::Message;
use novyra_kafka::rdkafka::producer::FutureRecord;
use novyra_kafka::rdkafka::{Offset, TopicPartitionList};
use novyra_registry::{Codec, EventKind};
use serde::{Deserialize, Serialize};

use crate::error::WorkerError;
use crate::Config;
use novyra_core::{Group, Topic};

/// What to reconcile.
#[derive(Debug, Clone, Default)]
pub struct ReconcileOptions {
    /// Report without writing.
    pub dry_run: bool,
    /// Only ids starting with this (concepts, and users for mastery); for a
    /// graph shared by several pipelines, as in tests. Empty: everything.
    pub id_prefix: String,
    /// Delete even more than `pipeline.reconcile_max_delete_share` of the graph.
    pub force: bool,
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
    /// Nodes, links and edges the graph held (within the id prefix).
    pub graph_size: u64,
    /// Nodes, links and edges the repair deletes.
    pub would_delete: u64,
    /// Refused: the repair would delete more than the configured share of
    /// the graph and `force` was not given; nothing was written.
    pub refused: bool,
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

/// The last record of one key below the snapshot: what compaction will
/// eventually leave, and the only one that says what the key holds now.
struct Latest {
    partition: i32,
    offset: i64,
    payload: Option<Vec<u8>>,
}

/// Reads `topic` from the beginning up to the high watermarks taken now and
/// keeps the last record per key. Fails, rather than returning a partial
/// view, if a partition stops short of its snapshot offset.
async fn read_to_snapshot(
    cfg: &Config,
    topic: &str,
) -> Result<(u64, BTreeMap<String, Latest>), WorkerError> {
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
    let mut latest = BTreeMap::new();
    if end.is_empty() {
        return Ok((0, latest));
    }
    consumer.assign(&tpl)?;
    let mut n = 0;
    while !end.is_empty() {
        let m = match tokio::time::timeout(READ_STALL, consumer.recv()).await {
            Ok(m) => m?,
            Err(_) => {
                let short: Vec<String> = end.iter().map(|(p, h)| format!("{p} (to {h})")).collect();
                return Err(WorkerError::Incomplete(format!(
                    "{topic}: no records for {} s with partitions {} unread up to the snapshot",
                    READ_STALL.as_secs(),
                    short.join(", ")
                )));
            }
        };
        let p = m.partition();
        let Some(&high) = end.get(&p) else {
            continue;
        };
        if m.offset() < high {
            n += 1;
            // A record without a UTF-8 key is refused by every sink, so it
            // never decides what a key holds.
            if let Some(key) = m.key().and_then(|k| std::str::from_utf8(k).ok()) {
                latest.insert(
                    key.to_owned(),
                    Latest {
                        partition: p,
                        offset: m.offset(),
                        payload: m.payload().map(<[u8]>::to_vec),
                    },
                );
            }
        }
        if m.offset() + 1 >= high {
            end.remove(&p);
        }
    }
    Ok((n, latest))
}

/// How long a snapshot read may see no record before it gives up.
const READ_STALL: Duration = Duration::from_secs(60);

/// Decodes the last record of every key of `topic`. Any record that cannot
/// be decoded or validated (registry down, poison) makes the view
/// incomplete: the caller must not act on it.
async fn decode_latest(
    cfg: &Config,
    codec: &Codec,
    topic: &str,
    latest: BTreeMap<String, Latest>,
) -> Result<Vec<Change>, WorkerError> {
    let mut out = Vec::with_capacity(latest.len());
    for (key, l) in latest {
        match decode_record(cfg, codec, topic, Some(&key), l.payload.as_deref()).await {
            Ok(c) => out.push(c),
            Err(e) => {
                return Err(WorkerError::Incomplete(format!(
                    "{topic}[{}]@{} (key {key:?}) is the latest record of its key and cannot be read: {e}{}",
                    l.partition,
                    l.offset,
                    if e.retryable {
                        ""
                    } else {
                        "; publish a valid record or a tombstone for that key"
                    }
                )))
            }
        }
    }
    Ok(out)
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

    // 2. The topics up to a snapshot taken after that: every key's last
    // record, all of which must decode (DESIGN.md: a job that cannot see
    // the whole truth does nothing).
    let mut report = Report::default();
    let mut concepts: BTreeMap<String, ConceptUpserted> = BTreeMap::new();
    let mut want_links: HashSet<(String, String)> = HashSet::new();
    let mut want_edges: HashMap<(String, String), Edge> = HashMap::new();
    // The graph's truth: what the graph sink consumes.
    for kind in Group::Graph.topics() {
        let topic = cfg.topic(kind);
        let (n, latest) = read_to_snapshot(cfg, &topic).await?;
        report.records_read += n;
        for change in decode_latest(cfg, &codec, &topic, latest).await? {
            match change {
                Change::Concept(c) => {
                    concepts.insert(c.concept_id.clone(), c);
                }
                Change::Link(l) => {
                    want_links.insert((l.prerequisite_id, l.concept_id));
                }
                Change::Mastery(m) => {
                    want_edges.insert(
                        (m.user_id, m.concept_id),
                        (m.mastery, m.version, m.updated_at),
                    );
                }
                Change::ConceptDeleted(_)
                | Change::Unlink(..)
                | Change::MasteryDeleted(..)
                | Change::Evaluation(_) => {}
            }
        }
    }
    concepts.retain(|id, _| id.starts_with(p));
    want_links.retain(|(_, c)| c.starts_with(p));
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
    // In key order, as the sink writes, so the two take locks alike.
    repairs.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
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

    // 5. The brake: deleting much of the graph is likelier a broken input
    // (a truncated or wrong topic) than drift.
    report.graph_size = (nodes.len() + links.len() + edges.len()) as u64;
    // A deleted concept takes its links and edges with it (DETACH DELETE).
    let cascaded = links
        .iter()
        .filter(|(a, b)| deleted.contains(a) || deleted.contains(b))
        .count()
        + edges.keys().filter(|(_, c)| deleted.contains(c)).count();
    report.would_delete =
        report.extra_concept + report.extra_link + report.extra_mastery + cascaded as u64;
    let allowed = cfg.pipeline.reconcile_max_delete_share * report.graph_size as f64;
    report.refused = !o.force && report.would_delete as f64 > allowed;
    if report.refused {
        tracing::warn!(
            would_delete = report.would_delete,
            graph_size = report.graph_size,
            max_share = cfg.pipeline.reconcile_max_delete_share,
            "reconciliation refused: it would delete too much of the graph (use --force if that is right)"
        );
    }

    if !o.dry_run && !report.refused {
        graph.write(&batch).await?;
        graph.repair_mastery(&repairs).await?;
        let producer = cfg.kafka().producer()?;
        let topic = cfg.topic(Topic::Mastery);
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
