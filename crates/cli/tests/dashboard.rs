//! Every PromQL expression of the Grafana dashboard
//! (deploy/grafana/novyra-stream.json) returns data from the stack's real
//! Prometheus (deploy/telemetry.sh, FULL=1) while a pipeline runs: the
//! pipeline's own series, the Postgres exporter's (statement latency,
//! replication lag, connections) and the JMX agents' (Kafka, Neo4j). A
//! panel whose query names a metric nobody exports, or a label nobody sets,
//! would show "no data" forever; this catches it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use novyra_core::Topic;
use novyra_kafka::rdkafka::producer::FutureRecord;
use novyra_pipeline::loadgen::{self, LoadgenOptions};
use serde_json::Value;

/// The stack's Prometheus; `NOVYRA_PROMETHEUS_ADDR` points elsewhere.
fn prometheus() -> String {
    std::env::var("NOVYRA_PROMETHEUS_ADDR").unwrap_or_else(|_| "127.0.0.1:9090".into())
}

async fn prom_api(path: &str) -> Value {
    let url = format!("http://{}{path}", prometheus());
    let resp = reqwest::get(&url).await.unwrap_or_else(|e| {
        panic!(
            "no Prometheus at {}: start the stack with FULL=1 (make test does): {e}",
            prometheus()
        )
    });
    let code = resp.status();
    let body = resp.text().await.expect("Prometheus answer");
    let v: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("Prometheus answered {code} with no JSON ({e}): {body}"));
    assert_eq!(v["status"], "success", "Prometheus {path}: {body}");
    v["data"].clone()
}

/// The address Prometheus scrapes for `job`, as its own target list says.
async fn scrape_address(job: &str) -> String {
    let targets = prom_api("/api/v1/targets").await;
    targets["activeTargets"]
        .as_array()
        .expect("targets")
        .iter()
        .find(|t| t["labels"]["job"] == job)
        .and_then(|t| t["labels"]["instance"].as_str())
        .unwrap_or_else(|| panic!("Prometheus has no {job} target: {targets}"))
        .to_owned()
}

/// How many series `expr` returns now, and how many of them hold a number
/// (histogram_quantile over no observations gives NaN).
async fn query(expr: &str) -> (usize, usize) {
    let q: String = form_urlencoded::byte_serialize(expr.as_bytes()).collect();
    let data = prom_api(&format!("/api/v1/query?query={q}")).await;
    let result = data["result"].as_array().expect("vector result");
    let finite = result
        .iter()
        .filter(|s| {
            s["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .is_some_and(f64::is_finite)
        })
        .count();
    (result.len(), finite)
}

fn dashboard_expressions() -> Vec<(String, String)> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/grafana/novyra-stream.json"
    );
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard")).expect("JSON");
    let mut exprs = Vec::new();
    for p in dash["panels"].as_array().expect("panels") {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} queries nothing", p["title"]);
        for t in targets {
            // `$job` is the dashboard's variable over the pipeline's jobs.
            let expr = t["expr"].as_str().expect("expr").replace("$job", "novyra");
            assert!(!expr.contains('$'), "an unknown variable in {expr}");
            exprs.push((p["title"].as_str().unwrap_or_default().to_owned(), expr));
        }
    }
    exprs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data_from_prometheus() {
    let exprs = dashboard_expressions();
    assert!(exprs.len() >= 20, "the dashboard's queries: {exprs:?}");

    // The config Prometheus runs passes promtool.
    let check = std::process::Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/telemetry.sh"
        ))
        .arg("check")
        .output()
        .expect("deploy/telemetry.sh check");
    assert!(
        check.status.success(),
        "promtool check config: {}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // The worker serves metrics where Prometheus looks for them.
    let metrics = scrape_address("novyra").await;
    assert!(
        std::net::TcpListener::bind(&metrics).is_ok(),
        "{metrics} is taken (a `make demo` running?); this test runs `novyra run` there"
    );

    // A run with one poison record (the DLQ series), then a steady trickle
    // while Prometheus is asked, so rates and latency quantiles have data.
    let env = Env::new("dash").await;
    let mut o = LoadgenOptions {
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
    let run = spawn_worker("run", &env.cfg, "", &format!("{}-run", env.name), &metrics);
    wait_caught_up(&env.cfg, Duration::from_secs(120)).await;
    o.seed = 6;
    o.rate = 50;
    o.attempts = 9_000;
    let cfg = env.cfg.clone();
    let trickle = tokio::spawn(async move { loadgen::generate_and_publish(&cfg, &o, true).await });

    let started = Instant::now();
    let missing = loop {
        let mut missing = Vec::new();
        for (title, expr) in &exprs {
            let (series, finite) = query(expr).await;
            if finite == 0 {
                missing.push(format!("[{title}] {expr}: {series} series, none finite"));
            }
        }
        if missing.is_empty() || started.elapsed() > Duration::from_secs(150) {
            break missing;
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    };
    trickle.abort();
    run.terminate();
    assert!(
        missing.is_empty(),
        "dashboard queries without data after {:?}:\n{}",
        started.elapsed(),
        missing.join("\n")
    );
}
