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

/// Creates the topics that do not exist yet; existing ones are left alone.
/// Returns the names created.
pub async fn ensure(
    cfg: &KafkaConfig,
    prefix: &str,
    specs: &[TopicSpec],
    replication: i32,
) -> Result<Vec<String>, KafkaError> {
    let admin: AdminClient<DefaultClientContext> = cfg.client(&[]).create()?;
    let names: Vec<String> = specs
        .iter()
        .map(|s| format!("{prefix}{}", s.suffix))
        .collect();
    let new: Vec<NewTopic<'_>> = specs
        .iter()
        .zip(&names)
        .map(|(s, name)| {
            let mut t = NewTopic::new(name, s.partitions, TopicReplication::Fixed(replication));
            for (k, v) in &s.configs {
                t = t.set(k, v);
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
