//! Consumer-group lag: committed offset versus high watermark per partition,
//! read without joining the group.

use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::{KafkaConfig, KafkaError};

/// Lag of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Committed offset (`None` when the group never committed).
    pub committed: Option<i64>,
    /// Low watermark (earliest available).
    pub low: i64,
    /// High watermark (next offset to be written).
    pub high: i64,
}

impl PartitionLag {
    /// Messages not yet consumed; with no commit, all available ones.
    pub fn lag(&self) -> i64 {
        (self.high - self.committed.unwrap_or(self.low).max(self.low)).max(0)
    }
}

/// Partition ids and watermarks of `topic`.
pub fn watermarks(
    consumer: &BaseConsumer,
    topic: &str,
    timeout: Duration,
) -> Result<Vec<(i32, i64, i64)>, KafkaError> {
    let md = consumer.fetch_metadata(Some(topic), timeout)?;
    let mut out = Vec::new();
    for t in md.topics() {
        for p in t.partitions() {
            let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout)?;
            out.push((p.id(), low, high));
        }
    }
    out.sort_unstable();
    Ok(out)
}

/// Lag of `group` on `topics`. Blocking: call from `spawn_blocking`.
pub fn group_lag(
    cfg: &KafkaConfig,
    group: &str,
    topics: &[String],
) -> Result<Vec<PartitionLag>, KafkaError> {
    let timeout = Duration::from_secs(10);
    let mut c = cfg.reader_config();
    c.set("group.id", group);
    let consumer: BaseConsumer = c.create()?;
    let mut rows = Vec::new();
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        for (p, low, high) in watermarks(&consumer, topic, timeout)? {
            tpl.add_partition(topic, p);
            rows.push(PartitionLag {
                topic: topic.clone(),
                partition: p,
                committed: None,
                low,
                high,
            });
        }
    }
    let committed = consumer.committed_offsets(tpl, timeout)?;
    for row in &mut rows {
        if let Some(e) = committed.find_partition(&row.topic, row.partition) {
            if let Offset::Offset(o) = e.offset() {
                row.committed = Some(o);
            }
        }
    }
    Ok(rows)
}
