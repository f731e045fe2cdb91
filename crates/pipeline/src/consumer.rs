//! What every group worker shares: a consumer context that counts
//! rebalances and commits synchronously on revoke, batch collection with a
//! linger, and DLQ publishing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use novyra_kafka::dlq::{self, DlqReason};
use novyra_kafka::rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use novyra_kafka::rdkafka::message::{Message, OwnedMessage};
use novyra_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use novyra_kafka::rdkafka::statistics::Statistics;
use novyra_kafka::rdkafka::{ClientContext, Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;

use crate::Health;

/// Counts rebalances (workers reload their state when it moves) and
/// commits stored offsets synchronously before partitions are revoked.
pub struct Ctx {
    /// Incremented on every assignment change.
    pub generation: Arc<AtomicU64>,
    group: String,
    health: Health,
}

impl Ctx {
    /// A context for `group`.
    pub fn new(group: &str, health: &Health) -> Self {
        health.init_group(group);
        Self {
            generation: Arc::new(AtomicU64::new(0)),
            group: group.to_owned(),
            health: health.clone(),
        }
    }
}

impl ClientContext for Ctx {
    /// librdkafka's periodic statistics (`statistics.interval.ms`): the
    /// per-partition lag behind the last *stored* offset, i.e. records not
    /// yet committed downstream, without an extra broker request.
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition < 0 || p.consumer_lag_stored < 0 {
                    continue;
                }
                self.health
                    .lag
                    .with_label_values(&[&self.group, topic, &partition.to_string()])
                    .set(p.consumer_lag_stored);
            }
        }
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            // NB: offsets stored so far belong to committed batches; commit them
            // now so the next owner does not redo work (correctness does not
            // depend on it: the ingest offsets in Postgres are authoritative).
            if tpl.count() > 0 {
                if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                    tracing::debug!(group = %self.group, error = %e, "commit on revoke");
                }
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.health
            .rebalances
            .with_label_values(&[&self.group])
            .inc();
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(group = %self.group, partitions = tpl.count(), "partitions assigned")
            }
            Rebalance::Revoke(tpl) => {
                // A revoked partition's lag is its new owner's to report.
                for e in tpl.elements() {
                    let _ = self.health.lag.remove_label_values(&[
                        &self.group,
                        e.topic(),
                        &e.partition().to_string(),
                    ]);
                }
                tracing::info!(group = %self.group, partitions = tpl.count(), "partitions revoked")
            }
            Rebalance::Error(e) => {
                tracing::warn!(group = %self.group, error = %e, "rebalance error")
            }
        }
    }
}

/// A consumer of this pipeline.
pub type PipelineConsumer = StreamConsumer<Ctx>;

/// Waits for the first message (or `stop`), then keeps taking messages
/// until `max` or `linger` has passed. Returns owned messages.
pub async fn next_batch(
    consumer: &PipelineConsumer,
    max: usize,
    linger: Duration,
    stop: &CancellationToken,
) -> Vec<OwnedMessage> {
    let mut out = Vec::new();
    let first = tokio::select! {
        m = consumer.recv() => m,
        _ = stop.cancelled() => return out,
        _ = tokio::time::sleep(Duration::from_millis(500)) => return out,
    };
    match first {
        Ok(m) => out.push(m.detach()),
        Err(e) => {
            tracing::warn!(error = %e, "consumer error");
            return out;
        }
    }
    let deadline = tokio::time::Instant::now() + linger;
    while out.len() < max {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => out.push(m.detach()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "consumer error");
                break;
            }
            Err(_) => break,
        }
    }
    out
}

/// Stores "next offset" = last offset + 1 for every partition in `msgs`,
/// to be committed by auto-commit. Call only after the downstream commit.
pub fn store_offsets(consumer: &PipelineConsumer, msgs: &[OwnedMessage]) {
    let mut next: HashMap<(&str, i32), i64> = HashMap::new();
    for m in msgs {
        let e = next.entry((m.topic(), m.partition())).or_insert(0);
        *e = (*e).max(m.offset() + 1);
    }
    let mut tpl = TopicPartitionList::new();
    for ((t, p), o) in next {
        let _ = tpl.add_partition_offset(t, p, Offset::Offset(o));
    }
    if let Err(e) = consumer.store_offsets(&tpl) {
        // Revoked partitions cannot be stored; their new owner carries on.
        tracing::debug!(error = %e, "storing offsets");
    }
}

/// A refused record and why.
#[derive(Debug, Clone)]
pub struct Refused {
    /// The original message.
    pub msg: OwnedMessage,
    /// Stage (`decode`, `validate`).
    pub stage: &'static str,
    /// Short reason class.
    pub class: &'static str,
    /// Reason text.
    pub message: String,
}

/// Publishes refused records to the DLQ and waits for every ack: the
/// source offsets must not be committed before the DLQ has the records.
/// Transient failures are retried with backoff; a permanent one (see
/// [`novyra_kafka::is_permanent_produce_error`]) is returned, which stops
/// the worker.
pub async fn send_to_dlq(
    producer: &FutureProducer,
    dlq_topic: &str,
    group: &str,
    refused: &[Refused],
    health: &Health,
    stop: &CancellationToken,
) -> Result<(), novyra_kafka::rdkafka::error::KafkaError> {
    for r in refused {
        tracing::warn!(group, topic = r.msg.topic(), partition = r.msg.partition(), offset = r.msg.offset(), reason = r.class, detail = %r.message, "record sent to dlq");
        let send = || async {
            let headers = dlq::headers(&DlqReason {
                topic: r.msg.topic(),
                partition: r.msg.partition(),
                offset: r.msg.offset(),
                stage: r.stage,
                class: r.class,
                message: &r.message,
            });
            let mut rec: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(dlq_topic).headers(headers);
            if let Some(k) = r.msg.key() {
                rec = rec.key(k);
            }
            if let Some(p) = r.msg.payload() {
                rec = rec.payload(p);
            }
            producer
                .send(rec, Duration::from_secs(30))
                .await
                .map_err(|(e, _)| e)
        };
        let retryable = |e: &novyra_kafka::rdkafka::error::KafkaError| {
            !novyra_kafka::is_permanent_produce_error(e)
        };
        if let Err(e) = crate::health::retry(health, "kafka", stop, retryable, send).await {
            if !retryable(&e) {
                // NB: the source offset must not move past a record the DLQ
                // does not have, so the worker stops instead.
                tracing::error!(group, topic = r.msg.topic(), partition = r.msg.partition(), offset = r.msg.offset(), error = %e, "the dlq refuses this record for good; stopping");
            }
            return Err(e);
        }
        health.dlq.with_label_values(&[group, r.class]).inc();
    }
    Ok(())
}

/// The key as UTF-8, if any.
pub fn key_str(m: &OwnedMessage) -> Option<&str> {
    m.key().and_then(|k| std::str::from_utf8(k).ok())
}
