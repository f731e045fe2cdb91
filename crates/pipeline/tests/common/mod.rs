//! What every pipeline integration test does first: its own schema,
//! topics and registered schemas on the shared local stack.

#![allow(dead_code, missing_docs)]

use std::collections::BTreeMap;
use std::time::Duration;

use novyra_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use novyra_kafka::rdkafka::message::{Headers, Message};
use novyra_kafka::rdkafka::{Offset, TopicPartitionList};
use novyra_pipeline::run::{self, Worker};
use novyra_pipeline::{CancellationToken, Config};
use novyra_registry::Codec;

/// The environment's config with the test's own topic prefix and schema
/// (`<tag><pid>`) and a metrics port of its own.
pub fn config(tag: &str) -> Config {
    let mut cfg = Config::load(None).expect("config from the environment (run via `make test`)");
    let run = format!("{tag}{}", std::process::id());
    cfg.topic_prefix = format!("{run}.");
    cfg.database.schema = Some(run);
    cfg.pipeline.metrics_addr = "127.0.0.1:0".into();
    cfg
}

/// Runs catalog, ingest and graph in process until every group is idle.
pub async fn run_all(cfg: &Config) {
    tokio::time::timeout(
        Duration::from_secs(240),
        run::run(
            cfg,
            &[Worker::Catalog, Worker::Ingest, Worker::Graph],
            true,
            CancellationToken::new(),
        ),
    )
    .await
    .expect("pipeline went idle in time")
    .expect("pipeline ran");
}

/// Migrates the test's schema, creates its topics and registers the
/// schemas; returns the (subject, id) pairs.
pub async fn setup(cfg: &Config) -> Vec<(String, u32)> {
    novyra_store::migrate(&cfg.migrate_store())
        .await
        .expect("migrate");
    novyra_kafka::topics::ensure(
        &cfg.kafka(),
        &cfg.topic_prefix,
        &novyra_kafka::topics::pipeline_topics(-1),
        1,
    )
    .await
    .expect("topics");
    Codec::new(&cfg.registry())
        .expect("codec")
        .register_all(&cfg.topic_prefix)
        .await
        .expect("schemas")
}

/// The headers of the first `expect` DLQ records (or fewer after 20 s), by
/// name.
pub fn dlq(cfg: &Config, expect: usize) -> Vec<BTreeMap<String, String>> {
    let c: BaseConsumer = cfg.kafka().reader_config().create().expect("reader");
    let topic = cfg.topic("dlq");
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset(&topic, p, Offset::Beginning)
            .expect("partition");
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while out.len() < expect && std::time::Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(500)) {
            let m = m.expect("dlq read");
            let h = m.headers().expect("dlq records carry headers");
            out.push(
                h.iter()
                    .map(|x| {
                        (
                            x.key.to_owned(),
                            String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect(),
            );
        }
    }
    out
}
