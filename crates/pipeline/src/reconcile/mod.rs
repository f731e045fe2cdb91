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
//! Memory: concepts and prerequisite links (thousands) are held whole.
//! Mastery keys (millions) are not: every side of their diff is spilled to
//! temporary files split by a hash of the user id ([`spill`]), then diffed
//! one bucket at a time ([`mastery`]), so the peak grows with
//! `pipeline.reconcile_bucket_rows`, not with the graph. Three passes over
//! the buckets: decode each key's latest topic record (and learn which
//! concepts edges still reference, which decides the concept deletes), count
//! the drift for the delete brake, then repair. The middle pass writes
//! nothing, so a refused or dry run leaves everything as it was.

mod mastery;
pub mod spill;

use std::collections::{BTreeMap, HashMap, HashSet};

use mastery::{diff_bucket, GraphEdge, WantEdge};
use spill::{Spill, SpillError};
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
    /// Concepts and mastery edges newer in the graph than the snapshot
    /// (written by the sink since; left alone).
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

/// The last record of one key below the snapshot: what compaction will
/// eventually leave, and the only one that says what the key holds now.
#[derive(Serialize, Deserialize)]
struct Latest {
    partition: i32,
    offset: i64,
    payload: Option<Vec<u8>>,
}

/// Reads `topic` from the beginning up to the high watermarks taken now,
/// handing each record with a UTF-8 key to `each` in the order read (a
/// key's records in offset order). Fails, rather than returning a partial
/// view, if a partition stops short of its snapshot offset. Returns how
/// many records were read.
async fn read_to_snapshot(
    cfg: &Config,
    topic: &str,
    mut each: impl FnMut(&str, Latest) -> Result<(), WorkerError>,
) -> Result<u64, WorkerError> {
    let consumer: StreamConsumer = cfg.kafka().snapshot_reader_config().create()?;
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
                each(
                    key,
                    Latest {
                        partition: p,
                        offset: m.offset(),
                        payload: m.payload().map(<[u8]>::to_vec),
                    },
                )?;
            }
        }
        if m.offset() + 1 >= high {
            end.remove(&p);
        }
    }
    Ok(n)
}

/// [`read_to_snapshot`] keeping every key's last record in memory: for the
/// small topics (concepts, prerequisites).
async fn latest_in_memory(
    cfg: &Config,
    topic: &str,
) -> Result<(u64, BTreeMap<String, Latest>), WorkerError> {
    let mut latest = BTreeMap::new();
    let n = read_to_snapshot(cfg, topic, |key, l| {
        latest.insert(key.to_owned(), l);
        Ok(())
    })
    .await?;
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
    let store = novyra_store::Store::new(&cfg.store())?;

    // Enough buckets that the largest side fits `reconcile_bucket_rows`
    // keys per bucket.
    let largest = store
        .mastery_row_count()
        .await?
        .max(graph.counts().await?.rel("MASTERED_BY"))
        .max(0) as usize;
    let spill = Spill::new(largest / cfg.pipeline.reconcile_bucket_rows + 1)?;

    // 0. Postgres first, then what is still in the outbox (on its way to
    // the topic): a row read here and relayed since is below the topic
    // watermarks taken later, so only rows the topic truly lacks remain.
    let mut rows = spill.writer::<MasteryUpdated>(POSTGRES)?;
    let mut after: Option<(String, String)> = None;
    loop {
        let page = store
            .mastery_rows_after(
                after.as_ref().map(|(u, c)| (u.as_str(), c.as_str())),
                PG_PAGE,
            )
            .await?;
        let Some(last) = page.last() else { break };
        after = Some((last.user_id.clone(), last.concept_id.clone()));
        for r in page {
            if r.user_id.starts_with(p) {
                rows.push(
                    &r.user_id,
                    &MasteryUpdated {
                        updated_at: r.updated_at.timestamp_millis(),
                        user_id: r.user_id.clone(),
                        concept_id: r.concept_id,
                        mastery: r.mastery,
                        version: r.version,
                        attempts_total: r.attempts_total,
                        attempts_correct: r.attempts_correct,
                        confidence_weight: r.confidence_weight,
                        last_event_id: r.last_event_id,
                    },
                )?;
            }
        }
    }
    rows.finish()?;
    let mut pending = spill.writer::<(String, String)>(PENDING)?;
    for (u, c) in store.outbox_pending_keys().await? {
        pending.push(&u, &(u.clone(), c))?;
    }
    pending.finish()?;

    // 1. The graph as it is.
    let nodes = graph.concept_nodes(p).await?;
    let links: HashSet<(String, String)> = graph.prerequisite_edges(p).await?.into_iter().collect();
    let mut edges = spill.writer::<GraphEdge>(GRAPH)?;
    let mut page = Vec::new();
    let mut after = String::new();
    while let Some(last) = graph.mastery_edge_page(p, &after, &mut page).await? {
        for e in page.drain(..) {
            edges.push(&e.user, &(e.user.clone(), e.concept, e.score, e.version))?;
        }
        after = last;
    }
    let edge_count = edges.finish()?;

    // 2. The topics up to a snapshot taken after that: every key's last
    // record, all of which must decode (DESIGN.md: a job that cannot see
    // the whole truth does nothing). Mastery records go to the spill, by
    // the user in their key, and are decoded bucket by bucket.
    let mut report = Report::default();
    let mut concepts: BTreeMap<String, ConceptUpserted> = BTreeMap::new();
    let mut want_links: HashSet<(String, String)> = HashSet::new();
    let mastery_topic = cfg.topic(Topic::Mastery);
    for kind in Group::Graph.topics() {
        let topic = cfg.topic(kind);
        if topic == mastery_topic {
            let mut w = spill.writer::<(String, Latest)>(TOPIC)?;
            let buckets = spill.buckets();
            report.records_read += read_to_snapshot(cfg, &topic, |key, l| {
                // A key that names no user cannot be decoded either; any
                // bucket will report it if it is a key's latest record.
                let b =
                    keys::parse_mastery_key(key).map_or(0, |(u, _)| spill::bucket_of(u, buckets));
                Ok(w.push_to(b, &(key.to_owned(), l))?)
            })
            .await?;
            w.finish()?;
            continue;
        }
        let (n, latest) = latest_in_memory(cfg, &topic).await?;
        report.records_read += n;
        for change in decode_latest(cfg, &codec, &topic, latest).await? {
            match change {
                Change::Concept(c) => {
                    concepts.insert(c.concept_id.clone(), c);
                }
                Change::Link(l) => {
                    want_links.insert((l.prerequisite_id, l.concept_id));
                }
                _ => {}
            }
        }
    }
    concepts.retain(|id, _| id.starts_with(p));
    want_links.retain(|(_, c)| c.starts_with(p));

    // 3a. Each mastery key's latest record, decoded; the concepts the
    // wanted edges reference.
    let mut referenced: HashSet<String> = want_links
        .iter()
        .flat_map(|(a, b)| [a.clone(), b.clone()])
        .collect();
    for b in 0..spill.buckets() {
        let mut latest: BTreeMap<String, Latest> = BTreeMap::new();
        spill.for_each(TOPIC, b, |(key, l): (String, Latest)| {
            latest.insert(key, l);
            Ok::<_, WorkerError>(())
        })?;
        let mut want: Vec<WantEdge> = Vec::new();
        for change in decode_latest(cfg, &codec, &mastery_topic, latest).await? {
            if let Change::Mastery(m) = change {
                if m.user_id.starts_with(p) {
                    referenced.insert(m.concept_id.clone());
                    want.push((m.user_id, m.concept_id, m.mastery, m.version, m.updated_at));
                }
            }
        }
        spill.write_bucket(WANT, b, &want)?;
    }

    // 3b. The concepts and links (small, in memory).
    let mut batch = GraphBatch::default();
    let mut concept_repairs: Vec<ConceptUpserted> = Vec::new();
    let have: HashMap<&str, &novyra_graph::ConceptNode> =
        nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    for (id, c) in &concepts {
        match have.get(id.as_str()) {
            None => {
                report.missing_concept += 1;
                concept_repairs.push(c.clone());
            }
            Some(n) => {
                let same = n.name.as_deref() == Some(c.name.as_str())
                    && n.domain.as_deref() == Some(c.domain.as_str())
                    && n.difficulty.map(f64::to_bits) == Some(c.difficulty.to_bits());
                if same {
                    continue;
                }
                if n.updated_at.is_some_and(|t| t > c.updated_at) {
                    // The sink has already written a newer event.
                    report.newer_in_graph += 1;
                } else {
                    report.stale_concept += 1;
                    concept_repairs.push(c.clone());
                }
            }
        }
    }
    for n in &nodes {
        if !concepts.contains_key(&n.id) && !referenced.contains(&n.id) {
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

    // 3c. The mastery edges, counted bucket by bucket (Postgres is the
    // truth for the mastery topic).
    let mut cascaded = links
        .iter()
        .filter(|(a, b)| deleted.contains(a) || deleted.contains(b))
        .count() as u64;
    for b in 0..spill.buckets() {
        let d = diff_spilled(&spill, b, &deleted)?;
        report.missing_mastery += d.missing;
        report.stale_mastery += d.stale;
        report.newer_in_graph += d.newer;
        report.extra_mastery += d.deletes.len() as u64;
        report.republished += d.republish.len() as u64;
        cascaded += d.cascaded;
    }

    // 4. The brake: deleting much of the graph is likelier a broken input
    // (a truncated or wrong topic) than drift.
    report.graph_size = (nodes.len() + links.len()) as u64 + edge_count;
    // A deleted concept takes its links and edges with it (DETACH DELETE).
    report.would_delete =
        report.extra_concept + report.extra_link + report.extra_mastery + cascaded;
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

    // 5. The repairs: concepts and links first, then each bucket's edges
    // and republished rows, diffed again from the same files.
    if !o.dry_run && !report.refused {
        let producer = cfg.kafka().producer()?;
        let repair = async {
            // Guarded like the mastery repairs: the sink may have written a
            // newer concept since the snapshot (found by the chaos test, while
            // the sink caught up after a Neo4j outage).
            graph.repair_concepts(&concept_repairs).await?;
            graph.write(&batch).await?;
            for b in 0..spill.buckets() {
                let d = diff_spilled(&spill, b, &deleted)?;
                let mut deletes = GraphBatch::default();
                for (u, c) in d.deletes {
                    deletes.mastery_deleted(u, c);
                }
                graph.write(&deletes).await?;
                graph.repair_mastery(&d.repairs).await?;
                for m in &d.republish {
                    let bytes = codec.encode(&mastery_topic, EventKind::Mastery, m).await?;
                    let key = keys::mastery_key(&m.user_id, &m.concept_id);
                    producer
                        .send(
                            FutureRecord::to(&mastery_topic).key(&key).payload(&bytes),
                            Duration::from_secs(60),
                        )
                        .await
                        .map_err(|(e, _)| e)?;
                }
            }
            Ok::<_, WorkerError>(())
        };
        repair
            .await
            .map_err(|e| WorkerError::RepairInterrupted(Box::new(e)))?;
        report.repaired = true;
    }
    tracing::info!(
        drift = report.drift(),
        dry_run = o.dry_run,
        buckets = spill.buckets(),
        spill_bytes = spill.bytes(),
        seconds = started.elapsed().as_secs_f64(),
        "reconciliation done"
    );
    Ok(report)
}

/// The spill sides, by file name.
const POSTGRES: &str = "postgres";
const PENDING: &str = "pending";
const GRAPH: &str = "graph";
const TOPIC: &str = "topic";
const WANT: &str = "want";

/// Postgres rows per page.
const PG_PAGE: i64 = 20_000;

/// Reads one bucket of every side back and diffs it.
fn diff_spilled(
    spill: &Spill,
    b: usize,
    deleted: &HashSet<String>,
) -> Result<mastery::BucketDiff, SpillError> {
    Ok(diff_bucket(
        spill.read(WANT, b)?,
        spill.read(GRAPH, b)?,
        spill.read(POSTGRES, b)?,
        spill.read(PENDING, b)?,
        deleted,
    ))
}
