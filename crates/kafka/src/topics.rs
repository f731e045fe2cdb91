//! The pipeline's topics with the partitions and cleanup policies of
//! DESIGN.md, created idempotently.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

use novyra_core::topics::{Cleanup, TOPICS};

use crate::{KafkaConfig, KafkaError};

/// One topic's shape.
#[derive(Debug, Clone)]
pub struct TopicSpec {
    /// Suffix after the prefix.
    pub suffix: &'static str,
    /// Partition count.
    pub partitions: i32,
    /// Topic-level configs.
    pub configs: Vec<(&'static str, String)>,
}

/// The topic table of `novyra_core::topics` as Kafka topic configs.
/// `attempts_retention_ms` is the retention of a deleting topic whose row
/// leaves it to the deployment (the attempts: `-1` keeps them forever,
/// which replay relies on).
pub fn pipeline_topics(attempts_retention_ms: i64) -> Vec<TopicSpec> {
    TOPICS
        .iter()
        .map(|t| TopicSpec {
            suffix: t.suffix,
            partitions: t.partitions,
            configs: match t.cleanup {
                Cleanup::Compact => vec![
                    ("cleanup.policy", "compact".to_owned()),
                    ("min.compaction.lag.ms", "0".to_owned()),
                ],
                Cleanup::Delete => vec![
                    ("cleanup.policy", "delete".to_owned()),
                    (
                        "retention.ms",
                        t.retention_days
                            .map_or(attempts_retention_ms, |d| i64::from(d) * 86_400_000)
                            .to_string(),
                    ),
                ],
            },
        })
        .collect()
}

/// How many copies of each partition Kafka keeps, and how many must hold a
/// write before an `acks=all` producer (ours) hears it succeeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replication {
    /// `replication.factor` of the topics created.
    pub factor: i32,
    /// `min.insync.replicas`, when above Kafka's default of 1.
    pub min_insync: Option<i32>,
}

/// The replication for a cluster of `brokers` brokers, unless configured
/// (`kafka.replication_factor`). Three copies with two in sync once there
/// are three brokers: one broker may fail, or be restarted, with no write
/// refused and none acknowledged by a single copy. Fewer brokers get one
/// copy per broker (the single-node dev stack: 1).
pub fn replication_for(configured: Option<i32>, brokers: usize) -> Replication {
    let factor = configured.unwrap_or_else(|| i32::try_from(brokers.clamp(1, 3)).unwrap_or(1));
    Replication {
        factor,
        min_insync: (factor >= 3).then_some(2),
    }
}

/// Creates the topics that do not exist yet; existing ones are left alone.
/// `replication` is `kafka.replication_factor`: `None` derives it from the
/// cluster's size ([`replication_for`]). Returns the names created.
pub async fn ensure(
    cfg: &KafkaConfig,
    prefix: &str,
    specs: &[TopicSpec],
    replication: Option<i32>,
) -> Result<Vec<String>, KafkaError> {
    let admin: AdminClient<DefaultClientContext> = cfg.client(&[]).create()?;
    let names: Vec<String> = specs
        .iter()
        .map(|s| format!("{prefix}{}", s.suffix))
        .collect();
    // The broker list comes with any metadata answer. Asking about all
    // topics, not one of ours: a metadata request naming a missing topic
    // lets a broker with auto.create.topics.enable create it with the
    // broker's partitions and cleanup policy, which the create below would
    // then take for ours.
    let brokers = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(30))?
        .brokers()
        .len();
    let plan = replication_for(replication, brokers);
    let min_insync = plan.min_insync.map(|n| n.to_string());
    let new: Vec<NewTopic<'_>> = specs
        .iter()
        .zip(&names)
        .map(|(s, name)| {
            let mut t = NewTopic::new(name, s.partitions, TopicReplication::Fixed(plan.factor));
            for (k, v) in &s.configs {
                t = t.set(k, v);
            }
            if let Some(n) = &min_insync {
                t = t.set("min.insync.replicas", n);
            }
            t
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    let mut created = Vec::new();
    for result in admin.create_topics(new.iter(), &opts).await? {
        match result {
            Ok(name) => created.push(name),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::CreateTopic {
                    topic,
                    detail: code.to_string(),
                })
            }
        }
    }
    Ok(created)
}

/// Deletes the pipeline's topics under `prefix` (benchmarks and tests clean
/// up after themselves); topics that do not exist are ignored.
pub async fn delete(
    cfg: &KafkaConfig,
    prefix: &str,
    specs: &[TopicSpec],
) -> Result<(), KafkaError> {
    let admin: AdminClient<DefaultClientContext> = cfg.client(&[]).create()?;
    let names: Vec<String> = specs
        .iter()
        .map(|s| format!("{prefix}{}", s.suffix))
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
    for result in admin.delete_topics(&refs, &opts).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
            Err((topic, code)) => {
                return Err(KafkaError::CreateTopic {
                    topic,
                    detail: format!("delete: {code}"),
                })
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_copies_two_in_sync_from_three_brokers() {
        assert_eq!(
            replication_for(None, 1),
            Replication {
                factor: 1,
                min_insync: None
            }
        );
        assert_eq!(
            replication_for(None, 2),
            Replication {
                factor: 2,
                min_insync: None
            }
        );
        for brokers in [3, 5, 12] {
            assert_eq!(
                replication_for(None, brokers),
                Replication {
                    factor: 3,
                    min_insync: Some(2)
                }
            );
        }
        // A configured factor wins, and still gets a quorum when it can.
        assert_eq!(
            replication_for(Some(1), 3),
            Replication {
                factor: 1,
                min_insync: None
            }
        );
        assert_eq!(
            replication_for(Some(5), 5),
            Replication {
                factor: 5,
                min_insync: Some(2)
            }
        );
    }
}
