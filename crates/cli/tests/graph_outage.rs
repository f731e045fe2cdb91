//! Neo4j down for a minute while mastery updates keep coming: the graph
//! sink stays up, reports not-ready naming neo4j, and after the restart
//! catches up with zero drift.
//!
//! NB: stops and restarts the shared stack's Neo4j, so it lives in its own
//! test binary (cargo runs test binaries one at a time).

mod common;

use std::time::{Duration, Instant};

use common::*;
use novyra_pipeline::loadgen::{self, LoadgenOptions};
use novyra_pipeline::reconcile::Report;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_sink_rides_out_a_neo4j_outage() {
    let env = Env::new("gout").await;
    let o = |n: usize, tag: &str| LoadgenOptions {
        concepts: 15,
        domains: 3,
        students: 300,
        attempts: n,
        seed: 4,
        rate: 0,
        days: 30,
        id_prefix: format!("{}-{tag}-", env.name),
    };
    let ingest = spawn_ingest(&env.cfg, "", &format!("{}-ingest", env.name));
    let metrics = free_addr();
    let graph = spawn_worker(
        "graph",
        &env.cfg,
        "",
        &format!("{}-graph", env.name),
        &metrics,
    );
    loadgen::generate_and_publish(&env.cfg, &o(5_000, "before"), true)
        .await
        .expect("publish");
    wait_caught_up(&env.cfg, Duration::from_secs(120)).await;
    wait_group_caught_up(&env.cfg, &env.cfg.group("graph"), Duration::from_secs(120)).await;
    wait_readyz(&metrics, 200, "ready", Duration::from_secs(30)).await;

    stack("neo4j.sh", "stop");
    let down = Instant::now();
    // Ingest keeps going; the mastery topic grows while the graph is away.
    let published = loadgen::generate_and_publish(&env.cfg, &o(5_000, "down"), true)
        .await
        .expect("publish");
    assert_eq!(published.attempts, 5_000);
    let why = wait_readyz(&metrics, 503, "neo4j", Duration::from_secs(60)).await;
    println!("not ready while neo4j is down: {why}");
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(down.elapsed())).await;
    assert!(
        http_get(&metrics, "/healthz").is_some(),
        "the graph sink is still alive"
    );
    stack("neo4j.sh", "start");
    wait_caught_up(&env.cfg, Duration::from_secs(120)).await;
    wait_group_caught_up(&env.cfg, &env.cfg.group("graph"), Duration::from_secs(180)).await;
    wait_readyz(&metrics, 200, "ready", Duration::from_secs(60)).await;
    terminate(graph);
    terminate(ingest);

    // The operator's check, as they would run it.
    let prefix = format!("{}-", env.name);
    let (code, out) = novyra(
        &env.cfg,
        &["reconcile", "--dry-run", "--json", "--id-prefix", &prefix],
    );
    assert_eq!(code, 0, "reconcile --dry-run: {out}");
    let report: Report = serde_json::from_str(out.trim()).expect("reconcile --json is a report");
    assert_eq!(report.drift(), 0, "{report:?}");
    assert!(!report.repaired, "a dry run writes nothing");
    assert!(report.records_read > 0, "{report:?}");
    let rows = mastery_table(&env.cfg).await;
    let edges = env
        .cfg
        .graph()
        .expect("graph")
        .mastery_edges(&format!("{}-", env.name))
        .await
        .expect("edges");
    assert_eq!(edges.len(), rows.len());
}
