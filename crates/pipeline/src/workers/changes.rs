//! The compacted topics (concepts, prerequisites, mastery) and the
//! evaluations log as a stream of changes, and the consume loop shared by
//! the sinks that apply them (the catalog and the audit log in Postgres,
//! the graph in Neo4j): decode, refuse poison to the DLQ, write the batch
//! with retry, and only then store the offsets. Every write is idempotent
//! (an upsert, a versioned merge, an insert that skips stored keys), so a
//! batch redelivered after a crash changes nothing twice.

use std::future::Future;
use std::time::{Duration, Instant};

use novyra_core::{
    keys, validate, ConceptUpserted, EvaluationLogged, MasteryUpdated, PrerequisiteLinked,
};
use novyra_kafka::rdkafka::message::{Message, OwnedMessage};
use novyra_registry::{Codec, EventKind};
use novyra_store::evaluations::EvaluationRecord;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::consumer::{key_str, send_to_dlq, Ctx, Refused, Source};
use crate::error::WorkerError;
use crate::health::retry;
use crate::telemetry;
use crate::{Config, Health};
use novyra_core::Topic;

/// A decoded record of a compacted topic: a value or a tombstone.
#[derive(Debug, Clone)]
pub enum Change {
    /// Concept upserted.
    Concept(ConceptUpserted),
    /// Concept tombstone.
    ConceptDeleted(String),
    /// Link made.
    Link(PrerequisiteLinked),
    /// Link tombstone.
    Unlink(String, String),
    /// Mastery update.
    Mastery(MasteryUpdated),
    /// Mastery tombstone.
    MasteryDeleted(String, String),
    /// A model evaluation for the audit log.
    Evaluation(Box<EvaluationRecord>),
}

/// Why one record of a compacted topic is not a usable change.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// Stage (`decode`, `validate`).
    pub stage: &'static str,
    /// Short reason class (a DLQ header and metric label).
    pub class: &'static str,
    /// Reason text.
    pub message: String,
    /// The registry could not be asked: the record may be fine.
    pub retryable: bool,
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.class, self.stage, self.message)
    }
}

/// Decodes and validates one record of the concepts, prerequisites,
/// mastery or evaluations topic, asking the registry once. An evaluation's
/// source partition and offset are -1: [`decode_change`] sets them. The
/// sinks retry the retryable rejections; reconciliation treats every
/// rejection as an incomplete view.
pub async fn decode_record(
    cfg: &Config,
    codec: &Codec,
    topic: &str,
    key: Option<&str>,
    payload: Option<&[u8]>,
) -> Result<Change, Rejection> {
    let refuse = |stage, class, message: String| {
        Err(Rejection {
            stage,
            class,
            message,
            retryable: false,
        })
    };
    let Some(kind) = EventKind::from_topic(&cfg.topic_prefix, topic) else {
        return refuse(
            "decode",
            "unknown_topic",
            format!("no event kind for topic {topic}"),
        );
    };
    let Some(payload) = payload else {
        return match (kind, key) {
            (EventKind::Concept, Some(k)) if !k.is_empty() => {
                Ok(Change::ConceptDeleted(k.to_owned()))
            }
            (EventKind::Prerequisite, Some(k)) => match keys::parse_prerequisite_key(k) {
                Some((a, b)) => Ok(Change::Unlink(a.to_owned(), b.to_owned())),
                None => refuse(
                    "validate",
                    "invalid_key",
                    format!("tombstone key {k:?} is not prerequisite>concept"),
                ),
            },
            (EventKind::Mastery, Some(k)) => match keys::parse_mastery_key(k) {
                Some((a, b)) => Ok(Change::MasteryDeleted(a.to_owned(), b.to_owned())),
                None => refuse(
                    "validate",
                    "invalid_key",
                    format!("tombstone key {k:?} is not user/concept"),
                ),
            },
            _ => refuse(
                "validate",
                "unexpected_tombstone",
                "tombstone without a usable key".into(),
            ),
        };
    };
    macro_rules! dec {
        ($t:ty) => {{
            match codec.decode::<$t>(kind, payload).await {
                Ok(d) => d,
                Err(e) => {
                    return Err(Rejection {
                        stage: "decode",
                        class: e.kind(),
                        message: e.to_string(),
                        retryable: e.is_retryable(),
                    })
                }
            }
        }};
    }
    let checked = match kind {
        EventKind::Concept => {
            let v = dec!(ConceptUpserted).value;
            validate::concept(&v)
                .and_then(|_| validate::key_matches(key, &v.concept_id))
                .map(|_| Change::Concept(v))
        }
        EventKind::Prerequisite => {
            let v = dec!(PrerequisiteLinked).value;
            let k = keys::prerequisite_key(&v.prerequisite_id, &v.concept_id);
            validate::prerequisite(&v)
                .and_then(|_| validate::key_matches(key, &k))
                .map(|_| Change::Link(v))
        }
        EventKind::Mastery => {
            let v = dec!(MasteryUpdated).value;
            let k = keys::mastery_key(&v.user_id, &v.concept_id);
            validate::mastery(&v)
                .and_then(|_| validate::key_matches(key, &k))
                .map(|_| Change::Mastery(v))
        }
        EventKind::Evaluation => {
            let d = dec!(EvaluationLogged);
            let (schema_id, v) = (i32::try_from(d.schema_id).unwrap_or(i32::MAX), d.value);
            let now_ms = chrono::Utc::now().timestamp_millis();
            validate::evaluation(&v, now_ms)
                .and_then(|_| validate::key_matches(key, &v.user_id))
                .map(|_| {
                    Change::Evaluation(Box::new(EvaluationRecord {
                        partition: -1,
                        offset: -1,
                        schema_id,
                        evaluation: v,
                    }))
                })
        }
        EventKind::Attempt => {
            return refuse(
                "decode",
                "unexpected_topic",
                "attempts are not catalog records".into(),
            )
        }
    };
    checked.or_else(|e| refuse("validate", e.kind(), e.to_string()))
}

/// [`decode_record`] for a consumed message, retrying while the registry is
/// unreachable. Outer error: shut down while retrying; inner error: the
/// record is refused (for the DLQ).
pub async fn decode_change(
    cfg: &Config,
    codec: &Codec,
    health: &Health,
    stop: &CancellationToken,
    m: &OwnedMessage,
) -> Result<Result<Change, Refused>, WorkerError> {
    let r = retry(
        health,
        "registry",
        stop,
        |e: &Rejection| e.retryable,
        || decode_record(cfg, codec, m.topic(), key_str(m), m.payload()),
    )
    .await;
    match r {
        Ok(Change::Evaluation(mut e)) => {
            e.partition = m.partition();
            e.offset = m.offset();
            Ok(Ok(Change::Evaluation(e)))
        }
        Ok(c) => Ok(Ok(c)),
        Err(e) if e.retryable => Err(WorkerError::Shutdown),
        Err(e) => Ok(Err(Refused {
            msg: m.clone(),
            stage: e.stage,
            class: e.class,
            message: e.message,
        })),
    }
}

/// A downstream that applies changes: it turns a batch into its own write
/// (once) and performs that write (possibly several times, on retry).
pub trait ChangeSink {
    /// The prepared write.
    type Batch: Send + Sync;
    /// The write's error.
    type Error: std::fmt::Display + Into<WorkerError> + Send;
    /// The dependency name for readiness, metrics and logs.
    const DEPENDENCY: &'static str;
    /// Prepares the write for one batch of changes, in topic order.
    fn prepare(&self, changes: Vec<Change>) -> Self::Batch;
    /// Performs the write, atomically.
    fn write<'a>(
        &'a self,
        batch: &'a Self::Batch,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'a;
    /// Whether a failed write may succeed later.
    fn retryable(e: &Self::Error) -> bool;

    /// Whether a committed batch's mastery records are measured in
    /// `novyra_graph_freshness_seconds` (the graph sink's are).
    const MEASURES_FRESHNESS: bool = false;
}

/// Consumes `topics` in group `<prefix>-<group>` until `stop`, applying
/// each batch to `sink`.
pub async fn consume<S: ChangeSink + Sync>(
    cfg: &Config,
    health: &Health,
    stop: CancellationToken,
    group: &str,
    topics: &[String],
    sink: &S,
) -> Result<(), WorkerError> {
    let group = cfg.group(group);
    let group = group.as_str();
    let codec = Codec::new(&cfg.registry())?;
    let producer = cfg.kafka().producer()?;
    let dlq_topic = cfg.topic(Topic::Dlq);
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let mut source = Source::start(
        &cfg.kafka().consumer_config(group),
        Ctx::new(group, health),
        &names,
        2 * cfg.pipeline.max_batch,
    )?;
    tracing::info!(group, "worker started");
    let linger = Duration::from_millis(cfg.pipeline.batch_linger_ms);
    while !stop.is_cancelled() {
        let msgs = source
            .next_batch(cfg.pipeline.max_batch, linger, &stop)
            .await?;
        if msgs.is_empty() {
            continue;
        }
        health
            .metrics
            .consumed
            .with_label_values(&[group])
            .inc_by(msgs.len() as u64);
        let mut changes = Vec::with_capacity(msgs.len());
        let mut good = Vec::with_capacity(msgs.len());
        let mut refused = Vec::new();
        for (i, m) in msgs.iter().enumerate() {
            match decode_change(cfg, &codec, health, &stop, m).await? {
                Ok(c) => {
                    changes.push(c);
                    good.push(i);
                }
                Err(r) => refused.push(r),
            }
        }
        if !refused.is_empty() {
            send_to_dlq(&producer, &dlq_topic, group, &refused, health, &stop).await?;
        }
        // One span per batch, continuing the trace of its first record
        // that carries one (see crate::telemetry); for a mastery record
        // that is the ingest transaction that computed it.
        let span = tracing::info_span!(
            "sink.batch",
            otel.name = %format_args!("{group} apply"),
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.operation.type = "process",
            messaging.consumer.group.name = group,
            messaging.batch.message_count = msgs.len(),
            novyra.dependency = S::DEPENDENCY,
            novyra.offsets = tracing::field::Empty,
            novyra.user_id = tracing::field::Empty,
            novyra.concept_id = tracing::field::Empty,
            novyra.last_event_id = tracing::field::Empty,
        );
        if telemetry::exporting() {
            let offsets = msgs
                .iter()
                .map(|m| (format!("{}/{}", m.topic(), m.partition()), m.offset()));
            span.record("novyra.offsets", telemetry::offset_ranges(offsets).as_str());
        }
        let head = telemetry::follow(&span, msgs.iter().map(telemetry::record_context));
        if let Some(Change::Mastery(m)) = head
            .and_then(|i| good.iter().position(|&g| g == i))
            .map(|at| &changes[at])
        {
            span.record("novyra.user_id", m.user_id.as_str());
            span.record("novyra.concept_id", m.concept_id.as_str());
            span.record("novyra.last_event_id", m.last_event_id.as_str());
        }
        let mut applied = changes.len() as u64;
        let batch = sink.prepare(changes);
        let started = Instant::now();
        let written = retry(health, S::DEPENDENCY, &stop, S::retryable, || {
            sink.write(&batch)
        })
        .instrument(span.clone())
        .await;
        drop(batch);
        let rejected = match written {
            Ok(()) => Vec::new(),
            Err(e) if S::retryable(&e) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(group, error = %e, "batch rejected; isolating the records at fault");
                let mut again = Vec::with_capacity(good.len());
                for &i in &good {
                    if let Ok(c) = decode_change(cfg, &codec, health, &stop, &msgs[i]).await? {
                        again.push((i, c));
                    }
                }
                isolate(sink, health, &stop, again)
                    .instrument(span.clone())
                    .await?
            }
        };
        if !rejected.is_empty() {
            applied -= rejected.len() as u64;
            let refused: Vec<Refused> = rejected
                .into_iter()
                .map(|(i, message)| Refused {
                    msg: msgs[i].clone(),
                    stage: "write",
                    class: "write_rejected",
                    message,
                })
                .collect();
            send_to_dlq(&producer, &dlq_topic, group, &refused, health, &stop).await?;
        }
        health
            .metrics
            .batch_seconds
            .with_label_values(&[group])
            .observe(started.elapsed().as_secs_f64());
        health
            .metrics
            .batch_size
            .with_label_values(&[group])
            .observe(msgs.len() as f64);
        health
            .metrics
            .committed
            .with_label_values(&[group])
            .inc_by(applied);
        health.metrics.observe_end_to_end(group, &msgs);
        if S::MEASURES_FRESHNESS {
            health.metrics.observe_freshness(&msgs);
        }
        source.store_offsets(&msgs);
    }
    source.close().await;
    tracing::info!(group, "worker stopped");
    Ok(())
}

/// After the downstream refused a whole batch for a reason retrying will
/// not fix (a constraint, a value it cannot store), finds the records at
/// fault by halving: halves are written in topic order, a half that fails
/// is split again, and a single change that fails is returned with the
/// reason, for the DLQ. Everything else is written, so one bad record
/// costs O(log n) extra writes, not the batch.
async fn isolate<S: ChangeSink + Sync>(
    sink: &S,
    health: &Health,
    stop: &CancellationToken,
    changes: Vec<(usize, Change)>,
) -> Result<Vec<(usize, String)>, WorkerError> {
    let mut rejected = Vec::new();
    // A stack of ranges, the earliest on top, so writes keep topic order.
    let mut todo = Vec::new();
    todo.push(0..changes.len());
    while let Some(r) = todo.pop() {
        if r.is_empty() {
            continue;
        }
        let batch = sink.prepare(changes[r.clone()].iter().map(|(_, c)| c.clone()).collect());
        match retry(health, S::DEPENDENCY, stop, S::retryable, || {
            sink.write(&batch)
        })
        .await
        {
            Ok(()) => {}
            Err(e) if S::retryable(&e) => return Err(e.into()),
            Err(e) if r.len() == 1 => rejected.push((changes[r.start].0, e.to_string())),
            Err(_) => {
                let mid = r.start + r.len() / 2;
                todo.push(mid..r.end);
                todo.push(r.start..mid);
            }
        }
    }
    Ok(rejected)
}
