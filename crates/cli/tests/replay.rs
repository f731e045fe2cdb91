//! `novyra replay` rebuilds Postgres from the topics into an empty schema
//! equal to the live tables (verified by the command itself and here), does
//! not write the live mastery topic again, refuses a non-empty target,
//! reports a difference with exit code 3, and rebuilds a wiped graph.

mod common;

use std::time::Duration;

use common::*;
use novyra_core::Topic;
use novyra_pipeline::loadgen::{self, LoadgenOptions};

fn mastery_end(env: &Env) -> i64 {
    let c: novyra_kafka::rdkafka::consumer::BaseConsumer =
        env.cfg.kafka().reader_config().create().expect("client");
    novyra_kafka::lag::watermarks(&c, &env.cfg.topic(Topic::Mastery), Duration::from_secs(10))
        .expect("marks")
        .iter()
        .map(|(_, _, high)| high)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_rebuilds_and_verifies() {
    let env = Env::new("rpl").await;
    let p = format!("{}-", env.name);
    let o = |n: usize, seed: u64| LoadgenOptions {
        concepts: 10,
        domains: 2,
        students: 60,
        attempts: n,
        seed,
        rate: 0,
        days: 30,
        id_prefix: p.clone(),
    };
    loadgen::generate_and_publish(&env.cfg, &o(3_000, 1), true)
        .await
        .expect("publish");
    run_until_idle(&env.cfg);
    let live = mastery_table(&env.cfg).await;
    assert!(live.len() > 100);
    let topic_before = mastery_end(&env);

    // Into an empty schema: identical, and the live mastery topic untouched.
    let schema = format!("{}_r", env.name);
    let (code, out) = novyra(&env.cfg, &["replay", "--schema", &schema, "--verify"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verify: identical"), "{out}");
    let mut rcfg = env.cfg.clone();
    rcfg.database.schema = Some(schema.clone());
    assert_same_mastery("replay", &live, &mastery_table(&rcfg).await);
    assert_eq!(mastery_end(&env), topic_before, "the replay must not relay");
    let store = novyra_store::Store::new(&rcfg.store()).expect("store");
    assert_eq!(store.outbox_len().await.expect("outbox"), 0);

    // A non-empty target is refused.
    let (code, out) = novyra(&env.cfg, &["replay", "--schema", &schema]);
    assert_ne!(code, 0, "{out}");

    // Attempts the live pipeline has not seen: the replay has more, and says so.
    loadgen::generate_and_publish(&env.cfg, &o(300, 2), true)
        .await
        .expect("publish");
    let (code, out) = novyra(
        &env.cfg,
        &[
            "replay",
            "--schema",
            &format!("{}_r2", env.name),
            "--verify",
        ],
    );
    assert_eq!(code, 3, "{out}");
    assert!(out.contains("verify: DIFFERENT"), "{out}");

    // The graph, wiped, rebuilt from the compacted topics.
    env.cfg
        .graph()
        .expect("graph")
        .delete_prefixed(&p)
        .await
        .expect("wipe");
    let (code, out) = novyra(
        &env.cfg,
        &["replay", "--target", "graph", "--id-prefix", &p, "--verify"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("graph verify: drift 0"), "{out}");
    let edges = env
        .cfg
        .graph()
        .expect("graph")
        .mastery_edges(&p)
        .await
        .expect("edges");
    assert_eq!(edges.len(), live.len());
}
