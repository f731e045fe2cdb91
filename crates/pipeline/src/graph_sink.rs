//! The `novyra-graph` group: concepts, prerequisites and mastery → Neo4j,
//! one coalesced `UNWIND` transaction per batch; offsets stored only after
//! the Neo4j commit.

use std::time::{Duration, Instant};

use novyra_graph::{GraphBatch, GraphError};
use novyra_kafka::rdkafka::consumer::Consumer;
use tokio_util::sync::CancellationToken;

use crate::catalog::{decode_change, Change};
use crate::consumer::{next_batch, send_to_dlq, store_offsets, Ctx, PipelineConsumer};
use crate::health::retry;
use crate::run::WorkerError;
use crate::{Config, Health};

/// Consumer group suffix: the group is `<prefix>-graph` (`novyra-graph`).
pub const GROUP: &str = "graph";

/// Runs the graph sink until `stop`.
pub async fn run(
    cfg: &Config,
    health: &Health,
    stop: CancellationToken,
) -> Result<(), WorkerError> {
    let group = cfg.group(GROUP);
    let group = group.as_str();
    let graph = cfg.graph()?;
    let codec = novyra_registry::Codec::new(&cfg.registry())?;
    let producer = cfg.kafka().producer()?;
    let dlq_topic = cfg.topic("dlq");
    retry(health, "neo4j", &stop, GraphError::is_retryable, || {
        graph.ensure_schema()
    })
    .await?;
    let consumer: PipelineConsumer = cfg
        .kafka()
        .consumer_config(group)
        .create_with_context(Ctx::new(group, health))?;
    let topics = [
        cfg.topic("concepts"),
        cfg.topic("prerequisites"),
        cfg.topic("mastery"),
    ];
    consumer.subscribe(&[&topics[0], &topics[1], &topics[2]])?;
    tracing::info!(group, "graph sink started");
    let linger = Duration::from_millis(cfg.pipeline.batch_linger_ms);
    while !stop.is_cancelled() {
        let msgs = next_batch(&consumer, cfg.pipeline.max_batch, linger, &stop).await;
        if msgs.is_empty() {
            continue;
        }
        health
            .consumed
            .with_label_values(&[group])
            .inc_by(msgs.len() as u64);
        let mut batch = GraphBatch::default();
        let mut refused = Vec::new();
        for m in &msgs {
            match decode_change(cfg, &codec, health, &stop, m).await? {
                Ok(Change::Concept(c)) => batch.concept(c),
                Ok(Change::ConceptDeleted(id)) => batch.concept_deleted(id),
                Ok(Change::Link(l)) => batch.link(l),
                Ok(Change::Unlink(a, b)) => batch.unlink(a, b),
                Ok(Change::Mastery(x)) => batch.mastery(x),
                Ok(Change::MasteryDeleted(u, c)) => batch.mastery_deleted(u, c),
                Err(r) => refused.push(r),
            }
        }
        if !refused.is_empty() {
            send_to_dlq(&producer, &dlq_topic, group, &refused, health, &stop).await?;
        }
        let started = Instant::now();
        retry(health, "neo4j", &stop, GraphError::is_retryable, || {
            graph.write(&batch)
        })
        .await?;
        health
            .batch_seconds
            .with_label_values(&[group])
            .observe(started.elapsed().as_secs_f64());
        health
            .committed
            .with_label_values(&[group])
            .inc_by(msgs.len() as u64);
        store_offsets(&consumer, &msgs);
    }
    let _ = consumer.commit_consumer_state(novyra_kafka::rdkafka::consumer::CommitMode::Sync);
    Ok(())
}
