//! Kafka plumbing shared by every worker: client configuration with
//! librdkafka pass-through, topic creation per DESIGN.md, the producer, the
//! DLQ record format, and consumer-group lag.

pub mod acls;
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
    /// A client call failed, and librdkafka said why: which broker, and
    /// what it refused (TLS, SASL, an unreachable address).
    #[error("kafka: {source}; the client reported: {reason}")]
    Broker {
        /// The call's error.
        source: rdkafka::error::KafkaError,
        /// librdkafka's last error about a broker.
        reason: String,
    },
    /// A read stopped short of the end offsets it set out to reach.
    #[error("{topic}: incomplete read: {detail}")]
    Incomplete {
        /// The topic.
        topic: String,
        /// Which partitions, and why.
        detail: String,
    },
    /// A topic could not be created.
    #[error("creating topic {topic}: {detail}")]
    CreateTopic {
        /// The topic.
        topic: String,
        /// What the broker said.
        detail: String,
    },
}

/// Whether a produce error is the record's or the configuration's, so that
/// retrying can never succeed (a record over the topic's size limit, a
/// principal without the ACL): callers must stop loudly instead of retrying
/// in silence. Timeouts, unreachable brokers and leader changes are not
/// permanent.
pub fn is_permanent_produce_error(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode as C;
    matches!(
        e.rdkafka_error_code(),
        Some(
            C::InvalidMessage
                | C::InvalidMessageSize
                | C::MessageSizeTooLarge
                | C::InvalidRecord
                | C::TopicAuthorizationFailed
                | C::ClusterAuthorizationFailed
                | C::PolicyViolation
                | C::InvalidRequiredAcks
        )
    )
}
