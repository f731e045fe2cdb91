//! Kafka plumbing shared by every worker: client configuration with
//! librdkafka pass-through, topic creation per DESIGN.md, the producer, the
//! DLQ record format, and consumer-group lag.

pub mod config;
pub mod dlq;
pub mod lag;
pub mod topics;

pub use config::KafkaConfig;
pub use rdkafka;

/// Kafka errors, classed so callers know whether to retry.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    /// A client call failed.
    #[error("kafka: {0}")]
    Client(#[from] rdkafka::error::KafkaError),
    /// A topic could not be created.
    #[error("creating topic {topic}: {detail}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// What the broker said.
        detail: String,
    },
}
