//! Every metric the Grafana dashboard (deploy/grafana/novyra-stream.json)
//! queries is exported by a running `novyra run`: a dashboard panel that
//! names a metric nobody exports would show "no data" forever.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::*;
use novyra_core::Topic;
use novyra_kafka::rdkafka::producer::FutureRecord;
use novyra_pipeline::loadgen::{self, LoadgenOptions};

/// Metric names in a PromQL expression (ours all start with `novyra_`).
fn metric_names(expr: &str, out: &mut BTreeSet<String>) {
    let mut rest = expr;
    while let Some(i) = rest.find("novyra_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
}

fn exported(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_on_the_dashboard_is_exported() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/novyra-stream.json"
    );
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("JSON");
    let mut wanted = BTreeSet::new();
    let panels = dash["panels"].as_array().expect("panels");
    for p in panels {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} queries nothing", p["title"]);
        for t in targets {
            metric_names(t["expr"].as_str().expect("expr"), &mut wanted);
        }
    }
    assert!(wanted.len() >= 10, "the dashboard's metrics: {wanted:?}");

    // A small run with one poison record, so the DLQ series exists too.
    let env = Env::new("dash").await;
    let o = LoadgenOptions {
        concepts: 8,
        domains: 2,
        students: 20,
        attempts: 500,
        seed: 5,
        rate: 0,
        days: 10,
        id_prefix: format!("{}-", env.name),
    };
    loadgen::generate_and_publish(&env.cfg, &o, true)
        .await
        .expect("publish");
    let producer = env.cfg.kafka().producer().expect("producer");
    producer
        .send(
            FutureRecord::<str, [u8]>::to(&env.cfg.topic(Topic::Attempts))
                .key("someone")
                .payload(&[9, 9, 9]),
            Duration::from_secs(10),
        )
        .await
        .expect("poison");
    let metrics = free_addr();
    let run = spawn_worker("run", &env.cfg, "", &format!("{}-run", env.name), &metrics);
    wait_caught_up(&env.cfg, Duration::from_secs(120)).await;

    // The lag gauge arrives with librdkafka's statistics (every 5 s).
    let started = Instant::now();
    let missing = loop {
        let text = http_get(&metrics, "/metrics")
            .map(|(_, b)| b)
            .unwrap_or_default();
        let have = exported(&text);
        let missing: Vec<&String> = wanted.iter().filter(|m| !have.contains(*m)).collect();
        if missing.is_empty() || started.elapsed() > Duration::from_secs(60) {
            break missing.into_iter().cloned().collect::<Vec<_>>();
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    terminate(run);
    assert!(
        missing.is_empty(),
        "queried by the dashboard but not exported: {missing:?}"
    );
}
