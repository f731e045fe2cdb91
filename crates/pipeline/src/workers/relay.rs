//! The outbox relay: publishes committed mastery changes to the compacted
//! mastery topic, in commit order, and deletes them once Kafka acked them.
//! A crash between the ack and the delete republishes; consumers are
//! version-guarded, so that is harmless.

use std::time::Duration;

use futures::future::try_join_all;
use novyra_core::keys;
use novyra_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use novyra_registry::{Codec, EventKind};
use novyra_store::outbox::RelayLease;
use novyra_store::Store;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::error::WorkerError;
use crate::telemetry;
use crate::{Config, Health};
use novyra_core::Topic;

/// Rows per relay round.
const RELAY_BATCH: i64 = 5_000;

/// How often a relay without the lease, or with an empty outbox, looks again
/// when nothing wakes it (rows queued by another process, a recomputation).
const IDLE: Duration = Duration::from_millis(100);

/// Runs the relay until `stop`: takes the lease when it can, then reads,
/// publishes (waiting for every ack) and deletes rows, holding no
/// transaction open while Kafka answers. `queued` is notified by the ingest
/// in the same process when it commits outbox rows, so they leave at once
/// instead of waiting up to [`IDLE`] (half the graph's freshness budget);
/// it does not cut short the backoff after a failure.
pub async fn run(
    cfg: &Config,
    health: &Health,
    stop: CancellationToken,
    queued: &tokio::sync::Notify,
) -> Result<(), WorkerError> {
    let store = Store::new(&cfg.store())?;
    let codec = Codec::new(&cfg.registry())?;
    let producer = cfg.kafka().producer()?;
    let topic = cfg.topic(Topic::Mastery);
    health.metrics.relayed.with_label_values(&[&topic]);
    let mut lease: Option<RelayLease> = None;
    let mut delay = IDLE;
    while !stop.is_cancelled() {
        let round = relay_round(&store, &mut lease, &codec, &producer, &topic).await;
        match round {
            Ok(n) => {
                health.set("relay", None);
                health
                    .metrics
                    .relayed
                    .with_label_values(&[&topic])
                    .inc_by(n as u64);
                delay = IDLE;
                if n as i64 == RELAY_BATCH {
                    continue;
                }
            }
            Err(msg) => {
                tracing::warn!(error = %msg, retry_in_ms = delay.as_millis() as u64, "outbox relay failed, retrying");
                health.set("relay", Some(msg));
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = queued.notified(), if delay == IDLE => {}
            _ = stop.cancelled() => {}
        }
    }
    Ok(())
}

/// One round; returns the rows relayed (0 without the lease). A Postgres
/// failure drops the lease (its connection may be gone, and with it the
/// lock); a Kafka failure keeps it and deletes nothing.
async fn relay_round(
    store: &Store,
    lease: &mut Option<RelayLease>,
    codec: &Codec,
    producer: &FutureProducer,
    topic: &str,
) -> Result<usize, String> {
    if lease.is_none() {
        *lease = store.relay_lease().await.map_err(|e| e.to_string())?;
    }
    let Some(l) = lease.as_mut() else {
        return Ok(0);
    };
    let rows = match l.take(RELAY_BATCH).await {
        Ok(rows) => rows,
        Err(e) => {
            *lease = None;
            return Err(e.to_string());
        }
    };
    if rows.is_empty() {
        return Ok(0);
    }
    let mut payloads = Vec::with_capacity(rows.len());
    for q in &rows {
        let e = &q.event;
        let bytes = codec
            .encode(topic, EventKind::Mastery, e)
            .await
            .map_err(|e| e.to_string())?;
        payloads.push((keys::mastery_key(&e.user_id, &e.concept_id), bytes));
    }
    // Each record carries the trace context its row was queued with, so the
    // graph's write continues the ingest's trace; the produce span itself
    // continues the first (see crate::telemetry).
    let span = tracing::info_span!(
        "relay.produce",
        otel.name = "relay mastery",
        otel.kind = "producer",
        messaging.system = "kafka",
        messaging.operation.type = "send",
        messaging.destination.name = topic,
        messaging.batch.message_count = rows.len(),
        novyra.offsets = tracing::field::Empty,
    );
    telemetry::follow(
        &span,
        rows.iter()
            .map(|q| q.traceparent.as_deref().and_then(telemetry::context_of)),
    );
    let sends = payloads.iter().zip(&rows).map(|((k, v), q)| {
        let mut record = FutureRecord::to(topic).key(k).payload(v);
        if let Some(h) = crate::metrics::mastery_headers(q.traceparent.as_deref(), q.source_ts) {
            record = record.headers(h);
        }
        producer.send(record, Duration::from_secs(60))
    });
    let delivered = try_join_all(sends)
        .instrument(span.clone())
        .await
        .map_err(|(e, _)| e.to_string())?;
    if telemetry::exporting() {
        let offsets = delivered.iter().map(|d| (d.partition, d.offset));
        span.record("novyra.offsets", telemetry::offset_ranges(offsets).as_str());
    }
    let ids: Vec<i64> = rows.iter().map(|q| q.id).collect();
    match l.delete(&ids).await {
        Ok(_) => Ok(rows.len()),
        Err(e) => {
            // Published but not deleted: the next relay publishes them
            // again, which version-guarded consumers absorb.
            *lease = None;
            Err(e.to_string())
        }
    }
}
