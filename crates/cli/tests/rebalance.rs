//! Consumers joining and leaving the ingest group while attempts arrive,
//! under both rebalance protocols: the result equals a single-consumer
//! replay bit for bit, and the mastery topic equals `mastery_records`.

mod common;

use std::time::Duration;

use common::*;
use novyra_pipeline::loadgen::{self, LoadgenOptions};

const ATTEMPTS: usize = 60_000;

async fn churn(tag: &str, strategy: &str) {
    let env = Env::new(tag).await;
    let o = LoadgenOptions {
        concepts: 30,
        domains: 3,
        students: 1_500,
        attempts: ATTEMPTS,
        seed: 5,
        rate: 6_000,
        days: 40,
        id_prefix: format!("{}-", env.name),
    };
    let publisher = {
        let (cfg, o) = (env.cfg.clone(), o.clone());
        tokio::spawn(async move { loadgen::generate_and_publish(&cfg, &o, true).await })
    };
    let toml = format!(
        "[pipeline]\nmax_batch = 500\n[kafka.properties]\n\
         \"partition.assignment.strategy\" = \"{strategy}\"\n\"session.timeout.ms\" = \"6000\"\n"
    );
    let start = |n: &str| spawn_ingest(&env.cfg, &toml, &format!("{}-{n}", env.name));
    let step = Duration::from_millis(1_500);
    let mut progress = Vec::new();
    let mut live: Vec<(&str, Worker)> = Vec::new();
    // Three join one after the other, then members leave and join while
    // the group keeps working.
    for action in ["+a", "+b", "+c", "-a", "+d", "-b"] {
        let (op, name) = action.split_at(1);
        if op == "+" {
            live.push((name, start(name)));
        } else if let Some(i) = live.iter().position(|(n, _)| *n == name) {
            terminate(live.remove(i).1);
        }
        tokio::time::sleep(step).await;
        progress.push(stored_offsets(&env.cfg).await);
    }
    publisher.await.expect("publisher").expect("publish");
    let end = attempts_end(&env.cfg);
    println!("{strategy}: offsets stored after each step {progress:?} of {end}");
    assert!(progress[2] > 0, "the group was working before members left");
    assert!(
        progress[progress.len() - 1] < end,
        "work was left for the changed group"
    );
    wait_caught_up(&env.cfg, Duration::from_secs(240)).await;
    for (_, child) in live {
        terminate(child);
    }

    assert_audit_consistent(&env.cfg, ATTEMPTS as i64).await;
    let churned = mastery_table(&env.cfg).await;
    assert_same_mastery(
        "the mastery topic's latest value per key equals mastery_records",
        &churned,
        &mastery_topic(&env.cfg).await,
    );
    let replay = env.replay_target("r").await;
    let child = spawn_ingest(&replay, "", &format!("{}-replay", env.name));
    wait_caught_up(&replay, Duration::from_secs(240)).await;
    terminate(child);
    assert_same_mastery(
        "a single-consumer replay equals the churned group's result",
        &churned,
        &mastery_table(&replay).await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_joining_and_leaving_cooperatively_change_nothing() {
    churn("coop", "cooperative-sticky").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_joining_and_leaving_eagerly_change_nothing() {
    churn("eager", "range").await;
}
