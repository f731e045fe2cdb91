//! What the integration tests of every crate share: a test's own corner of
//! the shared local stack (topic prefix, Postgres schema, metrics port),
//! set up the way `novyra topics`, `novyra schemas` and `novyra db migrate`
//! would. Tests talk to the real servers; nothing here is a mock.

use novyra_pipeline::Config;
use novyra_registry::Codec;

/// The environment's config (`make test` exports it) with the test's own
/// topic prefix and schema, `<tag><pid>`, and a metrics port of its own.
pub fn config(tag: &str) -> Config {
    init_logs();
    let mut cfg = Config::load(None).expect("config from the environment (run via `make test`)");
    let run = format!("{tag}{}", std::process::id());
    cfg.topic_prefix = format!("{run}.");
    cfg.database.schema = Some(run);
    cfg.pipeline.metrics_addr = "127.0.0.1:0".into();
    cfg
}

/// The workers' logs, filtered by `RUST_LOG` (default `warn`). libtest
/// captures them with the test's output, so they are printed for a
/// failing test only: the retries and deadlines a worker logs are what
/// explain a test that timed out waiting for the pipeline.
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Only the first test of a binary installs it; later calls are no-ops.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .with_ansi(false)
        .try_init();
}

/// Migrates the test's schema, creates its topics (attempts kept forever)
/// and registers the schemas; returns the (subject, id) pairs.
pub async fn setup(cfg: &Config) -> Vec<(String, u32)> {
    novyra_store::migrate(&cfg.migrate_store())
        .await
        .expect("migrate");
    novyra_kafka::topics::ensure(
        &cfg.kafka(),
        &cfg.topic_prefix,
        &novyra_kafka::topics::pipeline_topics(-1),
        cfg.kafka.replication_factor,
    )
    .await
    .expect("topics");
    Codec::new(&cfg.registry())
        .expect("codec")
        .register_all(&cfg.topic_prefix)
        .await
        .expect("schemas")
}
