//! Dead-letter records in Kafka Connect's DLQ header convention, so existing
//! DLQ tooling reads them: the original key and bytes, plus
//! `__connect.errors.*` headers naming where the record came from and why
//! it was refused. See
//! <https://docs.confluent.io/platform/current/connect/concepts.html#dead-letter-queue>.

use rdkafka::message::{Header, OwnedHeaders};

/// Where a refused record came from and why.
#[derive(Debug, Clone)]
pub struct DlqReason<'a> {
    /// Source topic.
    pub topic: &'a str,
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Pipeline stage that refused it (`decode`, `validate`, `write`).
    pub stage: &'a str,
    /// Short machine name of the failure (also the metrics label).
    pub class: &'a str,
    /// Human-readable reason.
    pub message: &'a str,
}

/// Header names of the Connect convention.
pub mod header {
    /// Source topic.
    pub const TOPIC: &str = "__connect.errors.topic";
    /// Source partition.
    pub const PARTITION: &str = "__connect.errors.partition";
    /// Source offset.
    pub const OFFSET: &str = "__connect.errors.offset";
    /// Stage.
    pub const STAGE: &str = "__connect.errors.stage";
    /// Failure class.
    pub const CLASS: &str = "__connect.errors.exception.class.name";
    /// Failure message.
    pub const MESSAGE: &str = "__connect.errors.exception.message";
}

/// The headers for a DLQ record.
pub fn headers(r: &DlqReason<'_>) -> OwnedHeaders {
    let partition = r.partition.to_string();
    let offset = r.offset.to_string();
    OwnedHeaders::new_with_capacity(6)
        .insert(Header {
            key: header::TOPIC,
            value: Some(r.topic),
        })
        .insert(Header {
            key: header::PARTITION,
            value: Some(&partition),
        })
        .insert(Header {
            key: header::OFFSET,
            value: Some(&offset),
        })
        .insert(Header {
            key: header::STAGE,
            value: Some(r.stage),
        })
        .insert(Header {
            key: header::CLASS,
            value: Some(r.class),
        })
        .insert(Header {
            key: header::MESSAGE,
            value: Some(r.message),
        })
}
