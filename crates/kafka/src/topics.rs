//! The pipeline's topics with the partitions and cleanup policies of
//! DESIGN.md, created idempotently.

use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::types::RDKafkaErrorCode;

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

/// DESIGN.md's topic table. `attempts_retention_ms` is the attempts topic's
/// retention (`-1` keeps them forever, which replay relies on).
pub fn pipeline_topics(attempts_retention_ms: i64) -> Vec<TopicSpec> {
    let compact = || {
        vec![
            ("cleanup.policy", "compact".to_owned()),
            ("min.compaction.lag.ms", "0".to_owned()),
        ]
    };
    vec![
        TopicSpec {
            suffix: "attempts",
            partitions: 12,
            configs: vec![
                ("cleanup.policy", "delete".into()),
                ("retention.ms", attempts_retention_ms.to_string()),
            ],
        },
        TopicSpec {
            suffix: "concepts",
            partitions: 3,
            configs: compact(),
        },
        TopicSpec {
            suffix: "prerequisites",
            partitions: 3,
            configs: compact(),
        },
        TopicSpec {
            suffix: "mastery",
            partitions: 12,
            configs: compact(),
        },
        TopicSpec {
            suffix: "dlq",
            partitions: 3,
            configs: vec![
                ("cleanup.policy", "delete".into()),
                ("retention.ms", (90_i64 * 24 * 3600 * 1000).to_string()),
            ],
        },
    ]
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
