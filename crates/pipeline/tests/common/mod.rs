//! What every pipeline integration test does first: its own schema,
//! topics and registered schemas on the shared local stack.

#![allow(dead_code, missing_docs)]

use novyra_pipeline::Config;
use novyra_registry::Codec;

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
