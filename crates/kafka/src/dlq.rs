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

/// A DLQ record read back: where it sits in the DLQ, where it came from,
/// why, and the original key and bytes.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// DLQ partition.
    pub partition: i32,
    /// DLQ offset.
    pub offset: i64,
    /// Source topic (header).
    pub source_topic: String,
    /// Source partition (header).
    pub source_partition: Option<i32>,
    /// Source offset (header).
    pub source_offset: Option<i64>,
    /// Failure class (header).
    pub class: String,
    /// Failure message (header).
    pub message: String,
    /// Original key.
    pub key: Option<Vec<u8>>,
    /// Original payload (`None`: a refused tombstone).
    pub payload: Option<Vec<u8>>,
}

/// Reads every record of `dlq_topic` up to the end offsets seen at the
/// start, without a consumer group. Blocking.
pub fn read_all(
    cfg: &crate::KafkaConfig,
    dlq_topic: &str,
) -> Result<Vec<DeadLetter>, crate::KafkaError> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::{Headers, Message};
    use rdkafka::{Offset, TopicPartitionList};
    use std::collections::HashMap;
    use std::time::{Duration, Instant};

    let c: BaseConsumer = cfg.reader_config().create()?;
    let mut open: HashMap<i32, i64> = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for (p, low, high) in crate::lag::watermarks(&c, dlq_topic, Duration::from_secs(10))? {
        if high > low {
            tpl.add_partition_offset(dlq_topic, p, Offset::Beginning)?;
            open.insert(p, high);
        }
    }
    c.assign(&tpl)?;
    let mut out = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !open.is_empty() && Instant::now() < deadline {
        let Some(m) = c.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = m?;
        let Some(&high) = open.get(&m.partition()) else {
            continue;
        };
        if m.offset() + 1 >= high {
            open.remove(&m.partition());
        }
        if m.offset() >= high {
            continue;
        }
        let h = |name: &str| {
            m.headers().and_then(|hs| {
                hs.iter()
                    .find(|x| x.key == name)
                    .and_then(|x| x.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
        };
        out.push(DeadLetter {
            partition: m.partition(),
            offset: m.offset(),
            source_topic: h(header::TOPIC).unwrap_or_default(),
            source_partition: h(header::PARTITION).and_then(|x| x.parse().ok()),
            source_offset: h(header::OFFSET).and_then(|x| x.parse().ok()),
            class: h(header::CLASS).unwrap_or_default(),
            message: h(header::MESSAGE).unwrap_or_default(),
            key: m.key().map(<[u8]>::to_vec),
            payload: m.payload().map(<[u8]>::to_vec),
        });
    }
    if !open.is_empty() {
        // Listing or replaying from part of the DLQ would silently skip
        // dead letters: fail instead.
        let mut short: Vec<i32> = open.into_keys().collect();
        short.sort_unstable();
        return Err(crate::KafkaError::Incomplete {
            topic: dlq_topic.to_owned(),
            detail: format!("partitions {short:?} not read to their end within 120 s"),
        });
    }
    Ok(out)
}
