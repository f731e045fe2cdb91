//! Kill -9 the ingest process again and again while it works through
//! 100,000 attempts (plus re-published duplicates): nothing is lost, nothing
//! applied twice, the mastery topic ends equal to `mastery_records`, and two
//! clean replays of the topic into empty schemas agree bit for bit.

mod common;

use std::time::Duration;

use common::*;
use novyra_core::Topic;
use novyra_pipeline::loadgen::{self, LoadgenOptions};
use novyra_registry::{Codec, EventKind};
use rand::{Rng, SeedableRng};

const ATTEMPTS: usize = 100_000;
const DUPLICATES: usize = 1_000;
const KILLS: usize = 10;

/// Static membership: a restarted process takes its predecessor's place in
/// the group at once instead of waiting out the dead member's session.
const CRASHY: &str = r#"
[pipeline]
max_batch = 700
write_lanes = 2
[kafka.properties]
"group.instance.id" = "ingest-0"
"session.timeout.ms" = "10000"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_killed_ten_times_loses_nothing_and_applies_nothing_twice() {
    let env = Env::new("kill").await;
    let o = LoadgenOptions {
        concepts: 40,
        domains: 4,
        students: 2_000,
        attempts: ATTEMPTS,
        seed: 11,
        rate: 0,
        days: 60,
        id_prefix: format!("{}-", env.name),
    };
    // Live traffic: the attempts arrive while the process is being killed,
    // at a rate that spreads them over the ten lives.
    let publisher = {
        let (cfg, o) = (env.cfg.clone(), o.clone());
        tokio::spawn(async move {
            loadgen::generate_and_publish(&cfg, &LoadgenOptions { rate: 6_500, ..o }, true).await
        })
    };

    let seed: u64 = rand::rng().random();
    println!("kill schedule seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut progress = Vec::new();
    for i in 0..KILLS {
        let child = spawn_ingest(&env.cfg, CRASHY, &format!("{}-{i}", env.name));
        let ms = rng.random_range(900..2_300);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        kill9(child);
        progress.push(stored_offsets(&env.cfg).await);
    }
    publisher
        .await
        .expect("publisher task")
        .expect("publish attempts");

    // A producer retrying: the same events again, later on the topic.
    let now = chrono::Utc::now().timestamp_millis();
    let c = loadgen::curriculum(&o, now);
    let again: Vec<_> = loadgen::attempts(&o, &c, now)
        .into_iter()
        .step_by(ATTEMPTS / DUPLICATES)
        .map(|a| (a.user_id.clone(), a))
        .collect();
    assert_eq!(again.len(), DUPLICATES);
    let codec = Codec::new(&env.cfg.registry()).expect("codec");
    let producer = env.cfg.kafka().producer().expect("producer");
    loadgen::publish(
        &codec,
        &producer,
        &env.cfg.topic(Topic::Attempts),
        EventKind::Attempt,
        &again,
        0,
        true,
    )
    .await
    .expect("duplicates");
    let end = attempts_end(&env.cfg);
    println!("offsets stored after each kill: {progress:?} of {end}");
    // The kills really interrupted the run: work was left after the last
    // one, and most lives committed something before dying.
    assert!(
        progress[KILLS - 1] < end,
        "the run finished before the last kill"
    );
    let advanced = progress.windows(2).filter(|w| w[1] > w[0]).count();
    assert!(
        advanced >= KILLS / 2,
        "too few lives made progress: {progress:?}"
    );
    let child = spawn_ingest(&env.cfg, CRASHY, &format!("{}-final", env.name));
    wait_caught_up(&env.cfg, Duration::from_secs(240)).await;
    terminate(child);

    assert_audit_consistent(&env.cfg, ATTEMPTS as i64).await;
    let crashed = mastery_table(&env.cfg).await;
    assert!(crashed.len() > 1_000, "{} mastery rows", crashed.len());
    let topic = mastery_topic(&env.cfg).await;
    assert_same_mastery(
        "the mastery topic's latest value per key equals mastery_records",
        &crashed,
        &topic,
    );

    // Two clean replays of the same topic into empty schemas, with other
    // batch shapes: bit-identical to each other and to the crashed run.
    for (suffix, toml) in [
        ("ra", ""),
        ("rb", "[pipeline]\nmax_batch = 137\nwrite_lanes = 1\n"),
    ] {
        let replay = env.replay_target(suffix).await;
        let child = spawn_ingest(&replay, toml, &format!("{}-{suffix}", env.name));
        wait_caught_up(&replay, Duration::from_secs(240)).await;
        terminate(child);
        assert_audit_consistent(&replay, ATTEMPTS as i64).await;
        let replayed = mastery_table(&replay).await;
        assert_same_mastery(
            &format!("replay {suffix} equals the crashed run bit for bit"),
            &crashed,
            &replayed,
        );
    }
}
