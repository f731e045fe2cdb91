//! Postgres down for six minutes, longer than `max.poll.interval.ms` (five),
//! while attempts keep arriving and a second ingest member joins in the
//! middle of the outage. The poll thread keeps both members in the group:
//! neither is evicted, the newcomer's partitions wait paused until Postgres
//! can say where they start, and when it is back the group catches up
//! without a stall, every event stored exactly once.
//!
//! NB: this test stops and restarts services of the shared local stack, so
//! it lives in its own test binary (cargo runs test binaries one at a time).

mod common;

use std::time::{Duration, Instant};

use common::*;
use novyra_core::Topic;
use novyra_pipeline::loadgen::{self, LoadgenOptions};
use novyra_registry::{Codec, EventKind};

const OUTAGE: Duration = Duration::from_secs(360);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_longer_than_the_poll_interval_neither_evicts_nor_stalls() {
    let env = Env::new("longout").await;
    let codec = Codec::new(&env.cfg.registry()).expect("codec");
    let producer = env.cfg.kafka().producer().expect("producer");
    let topic = env.cfg.topic(Topic::Attempts);
    let publish = |n: usize, tag: &str| {
        let o = LoadgenOptions {
            concepts: 20,
            domains: 2,
            students: 400,
            attempts: n,
            seed: 11,
            rate: 0,
            days: 30,
            id_prefix: format!("{}-{tag}-", env.name),
        };
        let (codec, producer, topic) = (&codec, &producer, &topic);
        async move {
            let now = chrono::Utc::now().timestamp_millis();
            let c = loadgen::curriculum(&o, now);
            let items: Vec<_> = loadgen::attempts(&o, &c, now)
                .into_iter()
                .map(|a| (a.user_id.clone(), a))
                .collect();
            loadgen::publish(codec, producer, topic, EventKind::Attempt, &items, 0, true)
                .await
                .expect("publish")
        }
    };
    let log_a = format!("{}-ingest-a", env.name);
    let log_b = format!("{}-ingest-b", env.name);
    let (metrics_a, metrics_b) = (free_addr(), free_addr());
    // A small batch, so the records arriving during the outage overflow
    // what the poll thread may hand over and it must pause fetching.
    let a = spawn_ingest_at(
        &env.cfg,
        "[pipeline]\nmax_batch = 200\n",
        &log_a,
        &metrics_a,
    );
    publish(4_000, "before").await;
    wait_caught_up(&env.cfg, Duration::from_secs(120)).await;

    stack("postgres.sh", "stop");
    let down_since = Instant::now();
    publish(4_000, "down1").await;
    wait_readyz(&metrics_a, 503, "postgres", Duration::from_secs(30)).await;
    // A second member joins while Postgres cannot say where its new
    // partitions start.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let b = spawn_ingest_at(&env.cfg, "", &log_b, &metrics_b);
    tokio::time::sleep(Duration::from_secs(60)).await;
    publish(4_000, "down2").await;
    let group = env.cfg.group("ingest");
    tokio::time::sleep(OUTAGE.saturating_sub(down_since.elapsed())).await;
    println!("postgres down for {:?}", down_since.elapsed());
    for m in [&metrics_a, &metrics_b] {
        assert!(http_get(m, "/healthz").is_some(), "both workers are alive");
    }
    // Both members still own partitions after more than max.poll.interval.ms.
    let rows =
        novyra_kafka::lag::describe_group(&env.cfg.kafka(), &group, std::slice::from_ref(&topic))
            .expect("describe group");
    let owners: std::collections::BTreeSet<String> = rows
        .iter()
        .filter_map(|r| r.owner.as_ref().map(|o| o.member_id.clone()))
        .collect();
    assert_eq!(
        owners.len(),
        2,
        "two members own the partitions at the end of the outage: {rows:?}"
    );
    let resumed = Instant::now();
    stack("postgres.sh", "start");
    // NB: Apicurio keeps dead database connections after Postgres restarts
    // (see dependency_outage.rs); the workers do not need it here.
    stack("apicurio.sh", "stop");
    stack("apicurio.sh", "start");
    wait_caught_up(&env.cfg, Duration::from_secs(120)).await;
    println!("caught up {:?} after postgres came back", resumed.elapsed());
    a.terminate();
    b.terminate();

    let log = |name: &str| {
        std::fs::read_to_string(std::env::temp_dir().join(format!("{name}.log"))).expect("log")
    };
    let (la, lb) = (log(&log_a), log(&log_b));
    for (name, l) in [(&log_a, &la), (&log_b, &lb)] {
        assert!(
            !l.contains("maximum poll interval"),
            "{name} exceeded max.poll.interval.ms"
        );
    }
    let (paused, resumed) = (
        la.find("worker backlog: pausing fetches"),
        la.rfind("worker backlog: resuming fetches"),
    );
    assert!(
        paused.is_some() && resumed > paused,
        "the stalled worker's partitions were paused, then resumed"
    );
    assert!(
        lb.contains("the new partitions wait paused"),
        "the newcomer's partitions were held while postgres was down"
    );
    assert!(
        lb.contains("positioned at the offset stored in postgres"),
        "and positioned from postgres once it answered"
    );
    assert_audit_consistent(&env.cfg, 12_000).await;
    assert_same_mastery(
        "the mastery topic's latest value per key equals mastery_records",
        &mastery_table(&env.cfg).await,
        &mastery_topic(&env.cfg).await,
    );
}
