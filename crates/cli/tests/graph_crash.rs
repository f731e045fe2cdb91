//! Kill -9 the graph sink again and again while mastery updates stream in:
//! afterwards reconciliation finds zero drift and every mastery row has its
//! edge with the same score and version.

mod common;

use std::time::{Duration, Instant};

use common::*;
use novyra_pipeline::loadgen::{self, LoadgenOptions};
use novyra_pipeline::reconcile::{reconcile, ReconcileOptions};
use rand::{Rng, SeedableRng};

const KILLS: usize = 8;
const CRASHY: &str = r#"
[pipeline]
max_batch = 500
[kafka.properties]
"group.instance.id" = "graph-0"
"session.timeout.ms" = "10000"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graph_sink_killed_repeatedly_ends_with_zero_drift() {
    let env = Env::new("gkill").await;
    let o = LoadgenOptions {
        concepts: 30,
        domains: 3,
        students: 800,
        attempts: 40_000,
        seed: 8,
        rate: 4_000,
        days: 30,
        id_prefix: format!("{}-", env.name),
    };
    let publisher = {
        let (cfg, o) = (env.cfg.clone(), o.clone());
        tokio::spawn(async move { loadgen::generate_and_publish(&cfg, &o, true).await })
    };
    let ingest = spawn_ingest(&env.cfg, "", &format!("{}-ingest", env.name));

    let seed: u64 = rand::rng().random();
    println!("kill schedule seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for i in 0..KILLS {
        let child = spawn_worker(
            "graph",
            &env.cfg,
            CRASHY,
            &format!("{}-graph-{i}", env.name),
            "127.0.0.1:0",
        );
        tokio::time::sleep(Duration::from_millis(rng.random_range(800..2_000))).await;
        kill9(child);
    }
    publisher.await.expect("publisher").expect("publish");
    let graph = spawn_worker(
        "graph",
        &env.cfg,
        CRASHY,
        &format!("{}-graph-final", env.name),
        "127.0.0.1:0",
    );
    wait_caught_up(&env.cfg, Duration::from_secs(240)).await;
    // The graph group has consumed the whole mastery topic.
    wait_group_caught_up(&env.cfg, &env.cfg.group("graph"), Duration::from_secs(240)).await;
    terminate(graph);
    terminate(ingest);

    let report = reconcile(
        &env.cfg,
        &ReconcileOptions {
            dry_run: true,
            id_prefix: format!("{}-", env.name),
            force: false,
        },
    )
    .await
    .expect("reconcile");
    assert_eq!(report.drift(), 0, "{report:?}");
    assert!(report.records_read > 1_000, "{report:?}");
    let rows = mastery_table(&env.cfg).await;
    let edges = env
        .cfg
        .graph()
        .expect("graph")
        .mastery_edges(&format!("{}-", env.name))
        .await
        .expect("edges");
    assert_eq!(edges.len(), rows.len());
    for ((u, c, score, version), m) in edges.iter().zip(&rows) {
        assert_eq!((u, c), (&m.user_id, &m.concept_id));
        assert_eq!(score.to_bits() as i64, m.mastery_bits, "{u}/{c}");
        assert_eq!(*version, m.version, "{u}/{c}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_beside_live_writes_never_rolls_an_edge_back() {
    let env = Env::new("glive").await;
    let o = LoadgenOptions {
        concepts: 25,
        domains: 3,
        students: 600,
        attempts: 30_000,
        seed: 9,
        rate: 1_500,
        days: 30,
        id_prefix: format!("{}-", env.name),
    };
    let publisher = {
        let (cfg, o) = (env.cfg.clone(), o.clone());
        tokio::spawn(async move { loadgen::generate_and_publish(&cfg, &o, true).await })
    };
    let ingest = spawn_ingest(&env.cfg, "", &format!("{}-ingest", env.name));
    let graph = spawn_worker(
        "graph",
        &env.cfg,
        "",
        &format!("{}-graph", env.name),
        "127.0.0.1:0",
    );
    // Repairing reconciliations while attempts, mastery and edges flow.
    let opts = ReconcileOptions {
        dry_run: false,
        id_prefix: format!("{}-", env.name),
        force: false,
    };
    // At least two runs, even when a loaded machine makes one run outlast
    // the publisher: the workers still drain its backlog meanwhile.
    let mut runs = 0;
    while !publisher.is_finished() || runs < 2 {
        let t = Instant::now();
        let r = reconcile(&env.cfg, &opts).await.expect("reconcile");
        runs += 1;
        println!(
            "reconcile {runs}: {:.1} s, {r:?}",
            t.elapsed().as_secs_f64()
        );
    }
    publisher.await.expect("publisher").expect("publish");
    wait_caught_up(&env.cfg, Duration::from_secs(240)).await;
    wait_group_caught_up(&env.cfg, &env.cfg.group("graph"), Duration::from_secs(240)).await;
    terminate(graph);
    terminate(ingest);

    // Every edge is at its row's final version: nothing was rolled back.
    let rows = mastery_table(&env.cfg).await;
    let edges = env
        .cfg
        .graph()
        .expect("graph")
        .mastery_edges(&format!("{}-", env.name))
        .await
        .expect("edges");
    assert_eq!(edges.len(), rows.len());
    for ((u, c, score, version), m) in edges.iter().zip(&rows) {
        assert_eq!((u, c), (&m.user_id, &m.concept_id));
        assert_eq!(*version, m.version, "{u}/{c}");
        assert_eq!(score.to_bits() as i64, m.mastery_bits, "{u}/{c}");
    }
    let last = reconcile(
        &env.cfg,
        &ReconcileOptions {
            dry_run: true,
            ..opts
        },
    )
    .await
    .expect("reconcile");
    assert_eq!(last.drift(), 0, "{last:?}");
}
