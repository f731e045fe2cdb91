//! What every group worker shares: the consumer (polled on its own
//! thread, positioned by the rebalance protocol in [`context`]) and DLQ
//! publishing.

mod context;
mod source;

pub use context::{Ctx, PostgresStart, POSITION_TIMEOUT};
pub use source::{Source, STALL_PAUSE};

use std::time::Duration;

use novyra_kafka::dlq::{self, DlqReason};
use novyra_kafka::rdkafka::message::{Message, OwnedMessage};
use novyra_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use tokio_util::sync::CancellationToken;

use crate::Health;

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
        health
            .metrics
            .dlq
            .with_label_values(&[group, r.class])
            .inc();
    }
    Ok(())
}

/// The key as UTF-8, if any.
pub fn key_str(m: &OwnedMessage) -> Option<&str> {
    m.key().and_then(|k| std::str::from_utf8(k).ok())
}
