//! The `novyra-ingest` group: attempts → one Postgres transaction per batch.
//!
//! Offsets: Postgres holds the authoritative next offset per partition,
//! written in the batch's own transaction, and assigned partitions start
//! there (see [`crate::consumer::Ctx`]). Records below it are skipped. A
//! batch only commits if each partition's stored offset is still the one it
//! started from, which fences a zombie that lost its partitions; a fenced
//! partition is repositioned from Postgres. Within one positioning the
//! records of a partition arrive in order from the stored offset, so a jump
//! in offsets is a real gap (transaction markers, retention) and is taken.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use chrono::NaiveDate;
use novyra_core::{validate, ConceptAttempted};
use novyra_kafka::rdkafka::message::{Message, OwnedMessage};
use novyra_registry::{Codec, EventKind};
use novyra_store::attempts::{months_of, AttemptBatch, IngestRecord, OffsetAdvance};
use novyra_store::{MonthLog, Store, StoreError};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::consumer::{key_str, send_to_dlq, Ctx, PostgresStart, Refused, Source};
use crate::health::retry;
use crate::telemetry;
use crate::{Config, Health};
use novyra_core::{Group, Topic};

/// Consumer group suffix: the group is `<prefix>-ingest` (`novyra-ingest`).
pub const GROUP: &str = Group::Ingest.suffix();

/// Months of partitions kept ready beyond the current one.
pub const MONTHS_AHEAD: u32 = 3;
const PARTITION_CHECK_EVERY: Duration = Duration::from_secs(6 * 3600);

/// Runs the ingest worker until `stop`.
pub async fn run(
    cfg: &Config,
    health: &Health,
    stop: CancellationToken,
    queued: &tokio::sync::Notify,
) -> Result<(), crate::error::WorkerError> {
    let group = cfg.group(GROUP);
    let group = group.as_str();
    let store = Store::new(&cfg.store())?;
    let codec = Codec::new(&cfg.registry())?;
    let producer = cfg.kafka().producer()?;
    let topic = cfg.topic(Topic::Attempts);
    let dlq_topic = cfg.topic(Topic::Dlq);
    let ctx = Ctx::new(group, health).starting_from(PostgresStart {
        store: store.clone(),
        group: group.to_owned(),
        runtime: tokio::runtime::Handle::current(),
    });
    let mut source = Source::start(
        &cfg.kafka().consumer_config(group),
        ctx,
        &[&topic],
        2 * cfg.pipeline.ingest_batch(),
    )?;
    tracing::info!(group, topic = %topic, "ingest worker started");

    let mut seen_generation = u64::MAX;
    // Next offset per partition as stored in Postgres (None: no row yet).
    let mut expected: HashMap<i32, Option<i64>> = HashMap::new();
    let mut months_ready: HashSet<NaiveDate> = HashSet::new();
    let linger = Duration::from_millis(cfg.pipeline.batch_linger_ms);
    let mut partitions_checked: Option<Instant> = None;

    while !stop.is_cancelled() {
        // Month partitions ahead, at start and every few hours, so live
        // traffic never depends on creating one (or lands in DEFAULT).
        if partitions_checked.is_none_or(|t| t.elapsed() > PARTITION_CHECK_EVERY) {
            let today = chrono::Utc::now().date_naive();
            let ahead = novyra_store::partitions::months_from(today, MONTHS_AHEAD);
            let stuck = retry(health, "postgres", &stop, StoreError::is_retryable, || {
                store.ensure_month_partitions(MonthLog::Attempts, &ahead)
            })
            .await?;
            for m in &stuck {
                tracing::warn!(month = %m, "default partition holds rows of this month; they stay there");
            }
            months_ready.extend(novyra_store::partitions::months_from(today, MONTHS_AHEAD));
            partitions_checked = Some(Instant::now());
        }
        let msgs = source
            .next_batch(cfg.pipeline.ingest_batch(), linger, &stop)
            .await?;
        if msgs.is_empty() {
            continue;
        }
        health
            .metrics
            .consumed
            .with_label_values(&[group])
            .inc_by(msgs.len() as u64);
        let g = source.generation();
        if g != seen_generation {
            // Assignment changed: what we know of stored offsets may be stale.
            expected.clear();
            seen_generation = g;
        }
        if msgs.iter().any(|m| !expected.contains_key(&m.partition())) {
            let stored = retry(health, "postgres", &stop, StoreError::is_retryable, || {
                store.stored_offsets(group, &topic)
            })
            .await?;
            for m in &msgs {
                expected
                    .entry(m.partition())
                    .or_insert_with(|| stored.get(&m.partition()).copied());
            }
        }

        // Keep, per partition, the records at or past the stored offset.
        let mut accepted: Vec<OwnedMessage> = Vec::with_capacity(msgs.len());
        let mut cursor: HashMap<i32, Option<i64>> = HashMap::new();
        for m in msgs {
            let p = m.partition();
            let at = cursor
                .entry(p)
                .or_insert_with(|| expected.get(&p).copied().flatten());
            match *at {
                Some(next) if m.offset() < next => continue,
                Some(next) if m.offset() > next => {
                    tracing::debug!(partition = p, from = next, to = m.offset(), "offset gap")
                }
                _ => {}
            }
            *at = Some(m.offset() + 1);
            accepted.push(m);
        }
        if accepted.is_empty() {
            continue;
        }

        // Decode and validate; refused records go to the DLQ.
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut records = Vec::with_capacity(accepted.len());
        let mut refused = Vec::new();
        for m in &accepted {
            match decode(&codec, health, &stop, m, now_ms).await? {
                Ok(r) => records.push(r),
                Err(r) => refused.push(r),
            }
        }
        records.sort_by_key(|r| (r.partition, r.offset));
        let mut advances: Vec<OffsetAdvance> = Vec::new();
        for m in &accepted {
            let p = m.partition();
            match advances.iter_mut().find(|a| a.partition == p) {
                Some(a) => a.next = a.next.max(m.offset() + 1),
                None => advances.push(OffsetAdvance {
                    partition: p,
                    start: expected.get(&p).copied().flatten(),
                    next: m.offset() + 1,
                }),
            }
        }

        let (batch_len, refused_len) = (accepted.len(), refused.len());
        if !refused.is_empty() {
            send_to_dlq(&producer, &dlq_topic, group, &refused, health, &stop).await?;
        }
        let months: Vec<NaiveDate> = months_of(&records)
            .into_iter()
            .filter(|m| !months_ready.contains(m))
            .collect();
        if !months.is_empty() {
            let to_default = retry(health, "postgres", &stop, StoreError::is_retryable, || {
                store.ensure_month_partitions(MonthLog::Attempts, &months)
            })
            .await?;
            for m in &to_default {
                tracing::warn!(month = %m, "attempts of this month land in the default partition");
            }
            months_ready.extend(months);
        }

        // One span per batch, continuing the trace of its first attempt
        // that carries one (see crate::telemetry).
        let span = tracing::info_span!(
            "ingest.batch",
            otel.name = "ingest attempts",
            otel.kind = "consumer",
            messaging.system = "kafka",
            messaging.operation.type = "process",
            messaging.destination.name = %topic,
            messaging.consumer.group.name = group,
            messaging.batch.message_count = batch_len,
            novyra.offsets = tracing::field::Empty,
            novyra.refused = refused_len,
            novyra.lanes = tracing::field::Empty,
        );
        if telemetry::exporting() {
            let offsets = accepted.iter().map(|m| (m.partition(), m.offset()));
            span.record("novyra.offsets", telemetry::offset_ranges(offsets).as_str());
        }
        telemetry::follow(&span, accepted.iter().map(telemetry::record_context));

        // Partitions never share a user, so their writes are independent:
        // split the batch into lanes by partition and commit the lanes in
        // parallel transactions. Each lane is fenced on its own partitions,
        // so a lane is all-or-nothing exactly like a whole batch.
        let mut lanes = split_lanes(group, &topic, records, advances, cfg.pipeline.write_lanes);
        span.record("novyra.lanes", lanes.len());
        // A span per transaction, whose context the outbox rows keep: the
        // mastery records they become continue this trace.
        let lane_spans: Vec<tracing::Span> = lanes
            .iter_mut()
            .map(|b| {
                let lane = tracing::info_span!(
                    parent: &span,
                    "pg.transaction",
                    otel.name = "postgres commit_attempts",
                    otel.kind = "client",
                    db.system.name = "postgresql",
                    db.operation.name = "commit_attempts",
                    messaging.destination.name = %topic,
                    novyra.attempts = b.records.len(),
                    novyra.offsets = tracing::field::Empty,
                );
                if telemetry::exporting() {
                    let offsets = b.records.iter().map(|r| (r.partition, r.offset));
                    lane.record("novyra.offsets", telemetry::offset_ranges(offsets).as_str());
                }
                b.traceparent = telemetry::traceparent(&lane);
                lane
            })
            .collect();
        let started = Instant::now();
        let store_ref = &store;
        let outcomes =
            futures::future::join_all(lanes.iter().zip(lane_spans).map(|(batch, lane)| {
                retry(
                    health,
                    "postgres",
                    &stop,
                    StoreError::is_retryable,
                    move || store_ref.commit_attempts(batch),
                )
                .instrument(lane)
            }))
            .instrument(span)
            .await;
        let mut committed_partitions: HashSet<i32> = HashSet::new();
        for (batch, outcome) in lanes.iter().zip(outcomes) {
            match outcome {
                Ok(o) => {
                    health
                        .metrics
                        .committed
                        .with_label_values(&[group])
                        .inc_by(o.inserted as u64);
                    tracing::debug!(
                        inserted = o.inserted,
                        duplicates = o.duplicates,
                        mastery = o.mastery_changed,
                        "batch committed"
                    );
                    if o.mastery_changed > 0 {
                        queued.notify_one();
                    }
                    for a in &batch.advances {
                        expected.insert(a.partition, Some(a.next));
                        committed_partitions.insert(a.partition);
                    }
                }
                Err(StoreError::Fenced { partition, .. }) => {
                    tracing::warn!(
                        partition,
                        "batch fenced: another consumer wrote the partition; repositioning from postgres"
                    );
                    // The whole lane rolled back: every partition in it
                    // starts again from what Postgres holds.
                    for a in &batch.advances {
                        expected.remove(&a.partition);
                        source.reposition(&topic, a.partition);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        let elapsed = started.elapsed();
        health
            .metrics
            .batch_seconds
            .with_label_values(&[group])
            .observe(elapsed.as_secs_f64());
        health
            .metrics
            .batch_size
            .with_label_values(&[group])
            .observe(accepted.len() as f64);
        let done: Vec<OwnedMessage> = accepted
            .into_iter()
            .filter(|m| committed_partitions.contains(&m.partition()))
            .collect();
        health.metrics.observe_end_to_end(group, &done);
        source.store_offsets(&done);
    }
    source.close().await;
    tracing::info!(group, "ingest worker stopped");
    Ok(())
}

/// Splits one batch into at most `lanes` batches by partition, keeping
/// each partition whole and in order.
fn split_lanes(
    group: &str,
    topic: &str,
    records: Vec<IngestRecord>,
    advances: Vec<OffsetAdvance>,
    lanes: usize,
) -> Vec<AttemptBatch> {
    let lanes = lanes.max(1);
    let mut out: Vec<AttemptBatch> = (0..lanes)
        .map(|_| AttemptBatch {
            group: group.to_owned(),
            topic: topic.to_owned(),
            records: Vec::new(),
            advances: Vec::new(),
            traceparent: None,
        })
        .collect();
    let lane = |p: i32| usize::try_from(p).unwrap_or(0) % lanes;
    for a in advances {
        out[lane(a.partition)].advances.push(a);
    }
    for r in records {
        out[lane(r.partition)].records.push(r);
    }
    out.retain(|b| !b.advances.is_empty());
    out
}

/// Decodes and validates one record. Outer error: a dependency failed for
/// good (or shutdown); inner error: the record is refused.
async fn decode(
    codec: &Codec,
    health: &Health,
    stop: &CancellationToken,
    m: &OwnedMessage,
    now_ms: i64,
) -> Result<Result<IngestRecord, Refused>, crate::error::WorkerError> {
    let refuse = |stage, class, message: String| {
        Ok(Err(Refused {
            msg: m.clone(),
            stage,
            class,
            message,
        }))
    };
    let Some(payload) = m.payload() else {
        return refuse(
            "decode",
            "unexpected_tombstone",
            "tombstone on the attempts topic".into(),
        );
    };
    let decoded = retry(
        health,
        "registry",
        stop,
        |e: &novyra_registry::DecodeError| e.is_retryable(),
        || codec.decode::<ConceptAttempted>(EventKind::Attempt, payload),
    )
    .await;
    let d = match decoded {
        Ok(d) => d,
        Err(e) if e.is_retryable() => return Err(crate::error::WorkerError::Shutdown),
        Err(e) => return refuse("decode", e.kind(), e.to_string()),
    };
    if let Err(e) = validate::attempt(&d.value, now_ms)
        .and_then(|_| validate::key_matches(key_str(m), &d.value.user_id))
    {
        return refuse("validate", e.kind(), e.to_string());
    }
    Ok(Ok(IngestRecord {
        partition: m.partition(),
        offset: m.offset(),
        schema_id: i32::try_from(d.schema_id).unwrap_or(i32::MAX),
        kafka_ts: m.timestamp().to_millis(),
        attempt: d.value,
    }))
}
