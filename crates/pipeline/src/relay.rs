//! The outbox relay: publishes committed mastery changes to the compacted
//! mastery topic, in commit order, and deletes them once Kafka acked them.
//! A crash between the ack and the delete republishes; consumers are
//! version-guarded, so that is harmless.

use std::time::Duration;

use futures::future::try_join_all;
use novyra_core::keys;
use novyra_kafka::rdkafka::producer::FutureRecord;
use novyra_registry::{Codec, EventKind};
use novyra_store::outbox::RelayError;
use novyra_store::Store;
use tokio_util::sync::CancellationToken;

use crate::run::WorkerError;
use crate::{Config, Health};

/// Rows per relay transaction.
const RELAY_BATCH: i64 = 5_000;

/// Runs the relay until `stop`.
pub async fn run(
    cfg: &Config,
    health: &Health,
    stop: CancellationToken,
) -> Result<(), WorkerError> {
    let store = Store::new(&cfg.store())?;
    let codec = Codec::new(&cfg.registry())?;
    let producer = cfg.kafka().producer()?;
    let topic = cfg.topic("mastery");
    health.relayed.with_label_values(&[&topic]);
    let mut delay = Duration::from_millis(100);
    while !stop.is_cancelled() {
        let (codec, producer, topic) = (&codec, &producer, topic.as_str());
        let result = store
            .relay_outbox(RELAY_BATCH, |events| async move {
                let mut payloads = Vec::with_capacity(events.len());
                for e in &events {
                    let bytes = codec
                        .encode(topic, EventKind::Mastery, e)
                        .await
                        .map_err(|e| e.to_string())?;
                    payloads.push((keys::mastery_key(&e.user_id, &e.concept_id), bytes));
                }
                let sends = payloads.iter().map(|(k, v)| {
                    producer.send(
                        FutureRecord::to(topic).key(k).payload(v),
                        Duration::from_secs(60),
                    )
                });
                try_join_all(sends).await.map_err(|(e, _)| e.to_string())?;
                Ok::<(), String>(())
            })
            .await;
        match result {
            Ok(n) => {
                health.set("relay", None);
                health.relayed.with_label_values(&[topic]).inc_by(n as u64);
                delay = Duration::from_millis(100);
                if n as i64 == RELAY_BATCH {
                    continue;
                }
            }
            Err(e) => {
                let msg = match &e {
                    RelayError::Store(s) => s.to_string(),
                    RelayError::Publish(p) => p.clone(),
                };
                tracing::warn!(error = %msg, retry_in_ms = delay.as_millis() as u64, "outbox relay failed, retrying");
                health.set("relay", Some(msg));
                delay = (delay * 2).min(Duration::from_secs(10));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.cancelled() => {}
        }
    }
    Ok(())
}
