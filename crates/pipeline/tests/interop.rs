//! Events published by another Confluent-compatible client (Python's
//! confluent-kafka AvroSerializer with our `.avsc` and the same registry)
//! are ingested like the project's own. `make test` installs the client in
//! `.stack/venv` and points `NOVYRA_PYTHON` at it.

mod common;

use std::process::Command;
use std::time::Duration;

use novyra_pipeline::run::{self, Worker};
use novyra_pipeline::CancellationToken;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attempts_from_confluent_python_client_are_ingested() {
    let cfg = common::config("py");
    let run_id = cfg.database.schema.clone().expect("schema");
    let ids = common::setup(&cfg).await;
    let attempts_id = ids
        .iter()
        .find(|(s, _)| s.ends_with("attempts-value"))
        .expect("attempts subject")
        .1;

    let python = std::env::var("NOVYRA_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/interop/produce_confluent.py"
    );
    let user_prefix = format!("{run_id}-");
    let out = Command::new(&python)
        .args([script, &cfg.topic_prefix, &user_prefix, "60"])
        .env("KAFKA_BROKERS", &cfg.kafka.brokers)
        .env("SCHEMA_REGISTRY_URL", &cfg.registry.url)
        .output()
        .expect("run the python producer");
    assert!(
        out.status.success(),
        "python producer failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("producer report");
    assert_eq!(report["count"], 60);
    // The Python client registers its own rendering of the schema, so the
    // registry may hand it another id than ours: decoding must go by the id.
    let python_id = report["schema_id"].as_i64().expect("schema id");
    assert!(python_id > 0 && attempts_id > 0);

    tokio::time::timeout(
        Duration::from_secs(180),
        run::run(&cfg, &Worker::ALL, true, CancellationToken::new()),
    )
    .await
    .expect("idle in time")
    .expect("pipeline ran");

    let store = novyra_store::Store::new(&cfg.store()).expect("store");
    let counts = store.table_counts().await.expect("counts");
    assert_eq!(counts.concept_attempts, 60);
    assert_eq!(
        store.attempt_schema_ids().await.expect("ids"),
        vec![python_id as i32],
        "decoded with the writer's schema"
    );
    assert_eq!(counts.rubric_evaluations, 15);
    assert_eq!(counts.mastery_records, 15, "5 users x 3 concepts");
    let (n, bad, _) = novyra_pipeline::summary::recompute(
        &store.attempts_in_applied_order().await.expect("audit"),
        &store.catalogue_params().await.expect("catalogue"),
    );
    assert_eq!((n, bad), (60, 0));
    let edges = cfg
        .graph()
        .expect("graph")
        .mastery_edges(&user_prefix)
        .await
        .expect("edges");
    assert_eq!(edges.len(), 15);
}
