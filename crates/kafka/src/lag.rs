//! Consumer-group lag: committed offset versus high watermark per partition,
//! read without joining the group.

use std::collections::HashMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::{Offset, TopicPartitionList};

use crate::config::{diagnose, Diagnosing};
use crate::{KafkaConfig, KafkaError};

/// Lag of one partition.
#[derive(Debug, Clone, PartialEq)]
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
    /// The member that owns the partition now, if the group is active.
    pub owner: Option<Member>,
    /// Age of the oldest record not yet consumed (its timestamp to now),
    /// in seconds; 0 when caught up, `None` when it could not be read.
    pub lag_seconds: Option<f64>,
}

/// A member of an active consumer group, as Kafka's own tools show it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    /// The member id the coordinator gave it.
    pub member_id: String,
    /// The client's `client.id`.
    pub client_id: String,
    /// The host it connects from.
    pub host: String,
}

impl PartitionLag {
    /// Messages not yet consumed; with no commit, all available ones.
    pub fn lag(&self) -> i64 {
        (self.high - self.committed.unwrap_or(self.low).max(self.low)).max(0)
    }
}

/// Partition ids and watermarks of `topic`.
pub fn watermarks<C: ConsumerContext>(
    consumer: &BaseConsumer<C>,
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
    let consumer: BaseConsumer<Diagnosing> = c.create_with_context(Diagnosing::default())?;
    let mut rows = Vec::new();
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let marks = match watermarks(&consumer, topic, timeout) {
            Err(KafkaError::Client(e)) => return Err(diagnose(&consumer, e)),
            other => other?,
        };
        for (p, low, high) in marks {
            tpl.add_partition(topic, p);
            rows.push(PartitionLag {
                topic: topic.clone(),
                partition: p,
                committed: None,
                low,
                high,
                owner: None,
                lag_seconds: None,
            });
        }
    }
    let committed = consumer
        .committed_offsets(tpl, timeout)
        .map_err(|e| diagnose(&consumer, e))?;
    for row in &mut rows {
        if let Some(e) = committed.find_partition(&row.topic, row.partition) {
            if let Offset::Offset(o) = e.offset() {
                row.committed = Some(o);
            }
        }
    }
    Ok(rows)
}

/// [`group_lag`] plus what an operator looks at: the owning member of each
/// partition and the lag in seconds (one more describe and one read per
/// lagging partition, so not for hot loops). Blocking.
pub fn describe_group(
    cfg: &KafkaConfig,
    group: &str,
    topics: &[String],
) -> Result<Vec<PartitionLag>, KafkaError> {
    let mut rows = group_lag(cfg, group, topics)?;
    let consumer: BaseConsumer = cfg.reader_config().create()?;
    let owners = owners(&consumer, group, Duration::from_secs(10))?;
    for row in &mut rows {
        row.owner = owners.get(&(row.topic.clone(), row.partition)).cloned();
    }
    lag_seconds(cfg, &mut rows)?;
    Ok(rows)
}

/// Which member owns which partition, from the group's description (the
/// classic consumer protocol's assignment bytes). Empty when the group has
/// no active members.
fn owners(
    consumer: &BaseConsumer,
    group: &str,
    timeout: Duration,
) -> Result<HashMap<(String, i32), Member>, KafkaError> {
    let mut out = HashMap::new();
    let list = consumer.fetch_group_list(Some(group), timeout)?;
    for g in list.groups().iter().filter(|g| g.name() == group) {
        for m in g.members() {
            let member = Member {
                member_id: m.id().to_owned(),
                client_id: m.client_id().to_owned(),
                host: m.client_host().trim_start_matches('/').to_owned(),
            };
            for tp in m
                .assignment()
                .and_then(parse_assignment)
                .unwrap_or_default()
            {
                out.insert(tp, member.clone());
            }
        }
    }
    Ok(out)
}

/// Decodes a consumer-protocol assignment: version (i16), then an array
/// (i32 count) of topic (i16-length string) with an array of partitions
/// (i32), then user data, which is ignored.
pub fn parse_assignment(b: &[u8]) -> Option<Vec<(String, i32)>> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        if b.len() < n {
            return None;
        }
        let (head, tail) = b.split_at(n);
        *b = tail;
        Some(head)
    }
    fn i16_(b: &mut &[u8]) -> Option<i16> {
        take(b, 2).map(|x| i16::from_be_bytes([x[0], x[1]]))
    }
    fn i32_(b: &mut &[u8]) -> Option<i32> {
        take(b, 4).map(|x| i32::from_be_bytes([x[0], x[1], x[2], x[3]]))
    }
    let mut b = b;
    if b.is_empty() {
        return Some(Vec::new());
    }
    let _version = i16_(&mut b)?;
    let mut out = Vec::new();
    for _ in 0..i32_(&mut b)?.max(0) {
        let len = usize::try_from(i16_(&mut b)?).ok()?;
        let topic = std::str::from_utf8(take(&mut b, len)?).ok()?.to_owned();
        for _ in 0..i32_(&mut b)?.max(0) {
            out.push((topic.clone(), i32_(&mut b)?));
        }
    }
    Some(out)
}

/// Fills `lag_seconds`: reads the first unconsumed record of every lagging
/// partition (one reader, no group) and takes its age. The same "time lag"
/// Burrow and kminion report: how stale the group's view is.
fn lag_seconds(cfg: &KafkaConfig, rows: &mut [PartitionLag]) -> Result<(), KafkaError> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut tpl = TopicPartitionList::new();
    for r in rows.iter_mut() {
        if r.lag() == 0 {
            r.lag_seconds = Some(0.0);
        } else {
            let from = r.committed.unwrap_or(r.low).max(r.low);
            tpl.add_partition_offset(&r.topic, r.partition, Offset::Offset(from))?;
        }
    }
    if tpl.count() == 0 {
        return Ok(());
    }
    let reader: BaseConsumer = cfg.reader_config().create()?;
    reader.assign(&tpl)?;
    let mut open = tpl.count();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while open > 0 && std::time::Instant::now() < deadline {
        let Some(m) = reader.poll(Duration::from_millis(200)) else {
            continue;
        };
        let Ok(m) = m else { continue };
        use rdkafka::Message;
        let Some(r) = rows
            .iter_mut()
            .find(|r| r.topic == m.topic() && r.partition == m.partition())
        else {
            continue;
        };
        if r.lag_seconds.is_none() {
            if let Some(ts) = m.timestamp().to_millis() {
                r.lag_seconds = Some((now - ts).max(0) as f64 / 1000.0);
            }
            open -= 1;
        }
    }
    Ok(())
}

/// Commits each partition's low watermark (earliest offset) as `group`'s
/// offset on `topics`, so the group re-reads them from the beginning; for
/// the catalog after a Postgres restore. Kafka accepts it only while the
/// group has no active members. Blocking. Returns the partitions reset.
pub fn rewind_group(
    cfg: &KafkaConfig,
    group: &str,
    topics: &[String],
) -> Result<usize, KafkaError> {
    use rdkafka::consumer::CommitMode;
    let timeout = Duration::from_secs(10);
    let mut c = cfg.reader_config();
    c.set("group.id", group);
    let consumer: BaseConsumer = c.create()?;
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        for (p, low, _) in watermarks(&consumer, topic, timeout)? {
            tpl.add_partition_offset(topic, p, Offset::Offset(low))?;
        }
    }
    let n = tpl.count();
    consumer.commit(&tpl, CommitMode::Sync)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assignment_bytes_decode() {
        // version 1; two topics: "a" [0, 2], "bc" [7]; user data (ignored).
        let mut b = vec![0, 1, 0, 0, 0, 2];
        b.extend([0, 1, b'a', 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 2]);
        b.extend([0, 2, b'b', b'c', 0, 0, 0, 1, 0, 0, 0, 7]);
        b.extend([0, 0, 0, 0]);
        assert_eq!(
            parse_assignment(&b),
            Some(vec![("a".into(), 0), ("a".into(), 2), ("bc".into(), 7)])
        );
        assert_eq!(parse_assignment(&[]), Some(vec![]));
        assert_eq!(parse_assignment(&[0, 1, 0, 0, 0, 1, 0, 9]), None);
    }
}
