//! `novyra lag` reports what Kafka's own `kafka-consumer-groups --describe`
//! reports (committed offset, end offset, lag, owning consumer), with the
//! group running and with it stopped behind a backlog; the lag in seconds
//! is the age of the oldest unconsumed record; thresholds set the exit code.

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use novyra_core::Topic;
use novyra_pipeline::loadgen::{self, LoadgenOptions};
use novyra_pipeline::Config;

/// (committed, end, lag, consumer id) per (topic, partition).
type Rows = BTreeMap<(String, i32), (Option<i64>, i64, Option<i64>, Option<String>)>;

fn ours(cfg: &Config) -> (Rows, BTreeMap<(String, i32), Option<f64>>) {
    let (code, out) = novyra(cfg, &["lag", "--json", "--group", "ingest"]);
    assert_eq!(code, 0, "novyra lag: {out}");
    let mut rows = Rows::new();
    let mut secs = BTreeMap::new();
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON object per line");
        assert_eq!(v["group"], cfg.group("ingest"));
        let key = (
            v["topic"].as_str().expect("topic").to_owned(),
            v["partition"].as_i64().expect("partition") as i32,
        );
        rows.insert(
            key.clone(),
            (
                v["committed"].as_i64(),
                v["end"].as_i64().expect("end"),
                v["lag"].as_i64(),
                v["member"]["member_id"].as_str().map(str::to_owned),
            ),
        );
        secs.insert(key, v["lag_seconds"].as_f64());
    }
    (rows, secs)
}

/// Kafka's ConsumerGroupCommand, through `deploy/kafka.sh groups`.
fn theirs(cfg: &Config) -> Rows {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/kafka.sh");
    let group = cfg.group("ingest");
    let out = Command::new("bash")
        .args([script, "groups", "--describe", "--group", &group])
        .output()
        .expect("kafka-consumer-groups");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "kafka-consumer-groups failed: {text}");
    let dash = |s: &str| (s != "-").then(|| s.to_owned());
    text.lines()
        .filter(|l| l.starts_with(&format!("{group} ")))
        .map(|l| {
            let c: Vec<&str> = l.split_whitespace().collect();
            (
                (c[1].to_owned(), c[2].parse().expect("partition")),
                (
                    dash(c[3]).map(|x| x.parse().expect("offset")),
                    c[4].parse().expect("end"),
                    dash(c[5]).map(|x| x.parse().expect("lag")),
                    dash(c[6]),
                ),
            )
        })
        .collect()
}

fn assert_same(what: &str, ours: &Rows, theirs: &Rows) {
    assert_eq!(
        ours.len(),
        theirs.len(),
        "{what}: partitions\nours   {ours:?}\ntheirs {theirs:?}"
    );
    for (k, (c, end, lag, member)) in theirs {
        let o = &ours[k];
        assert_eq!((&o.0, &o.1), (c, end), "{what}: offsets of {k:?}");
        if let Some(lag) = lag {
            assert_eq!(o.2.as_ref(), Some(lag), "{what}: lag of {k:?}");
        }
        assert_eq!(&o.3, member, "{what}: owner of {k:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_matches_kafka_tools_and_gates_on_thresholds() {
    let env = Env::new("lag").await;
    let o = |n: usize, seed: u64| LoadgenOptions {
        concepts: 10,
        domains: 2,
        students: 200,
        attempts: n,
        seed,
        rate: 0,
        days: 20,
        id_prefix: format!("{}-", env.name),
    };
    loadgen::generate_and_publish(&env.cfg, &o(3_000, 1), true)
        .await
        .expect("publish");
    let ingest = spawn_ingest(&env.cfg, "", &format!("{}-ingest", env.name));
    let group = env.cfg.group("ingest");
    wait_group_caught_up(&env.cfg, &group, Duration::from_secs(120)).await;

    // Running and caught up: every partition owned, zero lag, same numbers.
    let (running, secs) = ours(&env.cfg);
    assert_same("running", &running, &theirs(&env.cfg));
    assert_eq!(running.len(), 12);
    assert!(running.values().all(|r| r.2 == Some(0) && r.3.is_some()));
    assert!(secs.values().all(|s| *s == Some(0.0)));
    terminate(ingest);

    // Stopped behind a backlog: the lag is the new records, and their age.
    let published = Instant::now();
    loadgen::generate_and_publish(&env.cfg, &o(2_000, 2), true)
        .await
        .expect("publish");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (stopped, secs) = ours(&env.cfg);
    let age = published.elapsed().as_secs_f64();
    assert_same("stopped", &stopped, &theirs(&env.cfg));
    let attempts = env.cfg.topic(Topic::Attempts);
    let backlog: i64 = stopped
        .iter()
        .filter(|(k, _)| k.0 == attempts)
        .map(|(_, r)| r.2.unwrap_or(0))
        .sum();
    assert_eq!(backlog, 2_000, "the unconsumed attempts");
    assert!(stopped.values().all(|r| r.3.is_none()), "no members");
    for (k, r) in &stopped {
        let s = secs[k].expect("seconds readable");
        if r.2 == Some(0) {
            assert_eq!(s, 0.0, "{k:?}");
        } else {
            assert!(
                s >= 3.0 && s <= age + 1.0,
                "{k:?}: {s} s (published {age:.1} s ago)"
            );
        }
    }

    // Thresholds gate: code 3 above, 0 within.
    let code = |args: &[&str]| {
        let mut a = vec!["lag", "--group", "ingest"];
        a.extend_from_slice(args);
        novyra(&env.cfg, &a).0
    };
    assert_eq!(code(&["--max-lag", "10"]), 3);
    assert_eq!(code(&["--max-lag", "2000"]), 0);
    assert_eq!(code(&["--max-lag-seconds", "1"]), 3);
    assert_eq!(code(&["--max-lag-seconds", "3600"]), 0);
}
