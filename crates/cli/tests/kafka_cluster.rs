//! The pipeline on a three-node Kafka cluster (deploy/kafka.sh with
//! KAFKA_NODES=3) loses and doubles nothing when brokers die: the leader of
//! the attempts partitions is SIGKILLed mid-ingest, restarted, then a second
//! broker is; the pipeline keeps consuming while each is down, and every
//! attempt is in the topic and in Postgres exactly once.
//!
//! The cluster is this test's own, on ports beside the stack's single
//! broker (19092, 19094, 19096) with its state under .stack/kafka-cluster-test,
//! so the rest of the suite keeps its broker; `KAFKA_NODES=3 make stack-up`
//! runs the same script on the standard ports.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use novyra_core::Topic;
use novyra_kafka::rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use novyra_kafka::rdkafka::client::DefaultClientContext;
use novyra_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use novyra_pipeline::loadgen::{self, LoadgenOptions};
use novyra_pipeline::Config;

const NODES: [(i32, u16); 3] = [(1, 19092), (2, 19094), (3, 19096)];

fn stack_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../.stack/kafka-cluster-test"
    ))
}

/// `deploy/kafka.sh <action>` for the test's cluster.
fn cluster(action: &str) {
    let status = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/kafka.sh"
        ))
        .arg(action)
        .env("KAFKA_NODES", "3")
        .env("KAFKA_PORT", "19092")
        .env("KAFKA_CONTROLLER_PORT", "19093")
        .env("KAFKA_SECURE_PORT", "19192")
        .env("KAFKA_JMX_PORT", "19404")
        .env("KAFKA_HEAP", "-Xms256m -Xmx512m")
        .env("NOVYRA_STACK_DIR", stack_dir())
        .status()
        .expect("deploy/kafka.sh");
    assert!(status.success(), "kafka.sh {action} (3 nodes) failed");
}

/// Stops the cluster however the test ends.
struct Cluster;

impl Drop for Cluster {
    fn drop(&mut self) {
        cluster("stop");
    }
}

fn pid_of(node: i32) -> u32 {
    let name = if node == 1 {
        "kafka.pid".to_owned()
    } else {
        format!("kafka-{node}.pid")
    };
    std::fs::read_to_string(stack_dir().join("run").join(name))
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid")
}

fn sigkill(node: i32) {
    let pid = pid_of(node);
    let status = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "SIGKILL node {node} (pid {pid})");
}

/// The leader and replica count of each partition of the attempts topic.
fn partitions(cfg: &Config) -> Vec<(i32, usize)> {
    let c: BaseConsumer = cfg.kafka().reader_config().create().expect("reader");
    let topic = cfg.topic(Topic::Attempts);
    let md = c
        .fetch_metadata(Some(&topic), Duration::from_secs(10))
        .expect("metadata");
    md.topics()[0]
        .partitions()
        .iter()
        .map(|p| (p.leader(), p.replicas().len()))
        .collect()
}

/// Waits until the stored offsets grow by `by` records: the pipeline is
/// consuming.
async fn wait_progress(cfg: &Config, by: i64, what: &str) {
    let start = stored_offsets(cfg).await;
    let t = Instant::now();
    while stored_offsets(cfg).await < start + by {
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "no progress {what}: stored offsets stuck at {}",
            stored_offsets(cfg).await
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    println!("{what}: +{by} records stored in {:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_failures_lose_and_double_nothing() {
    // A fresh cluster every run.
    cluster("stop");
    let _ = std::fs::remove_dir_all(stack_dir().join("kafka-cluster"));
    cluster("start");
    let _guard = Cluster;

    let mut cfg = novyra_testkit::config("kcl");
    cfg.kafka.brokers = NODES
        .iter()
        .map(|(_, p)| format!("127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    novyra_testkit::setup(&cfg).await;
    let name = cfg.database.schema.clone().expect("schema");

    // Three copies with two in sync, from the cluster's size alone.
    let parts = partitions(&cfg);
    assert!(
        parts.iter().all(|&(_, replicas)| replicas == 3),
        "{parts:?}"
    );
    let admin: AdminClient<DefaultClientContext> = cfg.kafka().client(&[]).create().expect("admin");
    let topic = cfg.topic(Topic::Attempts);
    let described = admin
        .describe_configs(&[ResourceSpecifier::Topic(&topic)], &AdminOptions::new())
        .await
        .expect("describe configs");
    let resource = described[0].as_ref().expect("topic config");
    let min_isr = resource
        .get("min.insync.replicas")
        .and_then(|e| e.value.clone());
    assert_eq!(min_isr.as_deref(), Some("2"));

    // The whole pipeline, and a steady stream of attempts.
    let run = spawn_worker("run", &cfg, "", &format!("{name}-run"), "127.0.0.1:0");
    let o = LoadgenOptions {
        concepts: 10,
        domains: 2,
        students: 80,
        attempts: 60_000,
        seed: 11,
        rate: 250,
        days: 10,
        id_prefix: format!("{name}-"),
    };
    let pcfg = cfg.clone();
    let publisher =
        tokio::spawn(async move { loadgen::generate_and_publish(&pcfg, &o, true).await });
    wait_progress(&cfg, 1_000, "before any failure").await;

    // 1. SIGKILL the leader of partition 0 mid-ingest.
    let first = partitions(&cfg)[0].0;
    sigkill(first);
    println!("SIGKILLed node {first}, the leader of attempts partition 0");
    wait_progress(&cfg, 1_500, &format!("with node {first} down")).await;
    assert_ne!(partitions(&cfg)[0].0, first, "leadership moved");
    cluster("start");

    // 2. Later, a second broker: a leader other than the first victim.
    wait_progress(&cfg, 1_000, "with all three back").await;
    let second = partitions(&cfg)
        .iter()
        .map(|&(leader, _)| leader)
        .find(|&l| l != first)
        .expect("a leader other than the first victim");
    sigkill(second);
    println!("SIGKILLed node {second}");
    wait_progress(&cfg, 1_500, &format!("with node {second} down")).await;
    cluster("start");

    let published = publisher
        .await
        .expect("publisher task")
        .expect("every attempt acknowledged");
    wait_caught_up(&cfg, Duration::from_secs(180)).await;
    run.terminate();

    // Nothing lost or doubled: in the topic (idempotent producer) and in
    // Postgres (offsets in the transaction, dedup).
    let n = i64::try_from(published.attempts).expect("count");
    assert_eq!(attempts_end(&cfg), n, "records in the attempts topic");
    assert_audit_consistent(&cfg, n).await;
    println!(
        "{n} attempts through two broker failures: {n} records in the topic, {n} rows, none twice"
    );
}
