//! `novyra tail` prints exactly the records asked for, decoded through the
//! registry (key, partition, offset, timestamp, schema id, value), from the
//! beginning, from a time, from an offset, by count, filtered, as a table,
//! and following; DLQ records come with their error headers and the
//! original payload decoded; and tailing never creates a consumer group.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::*;
use novyra_core::ConceptAttempted;
use novyra_core::Topic;
use novyra_kafka::dlq::header;
use novyra_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use novyra_kafka::rdkafka::producer::FutureRecord;
use novyra_pipeline::Config;
use novyra_registry::{Codec, EventKind};
use serde_json::Value;

fn tail(cfg: &Config, args: &[&str]) -> Vec<Value> {
    let mut a = vec!["tail"];
    a.extend_from_slice(args);
    let (code, out) = novyra(cfg, &a);
    assert_eq!(code, 0, "novyra {a:?}: {out}");
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn groups(cfg: &Config) -> BTreeSet<String> {
    let c: BaseConsumer = cfg.kafka().reader_config().create().expect("client");
    c.fetch_group_list(None, Duration::from_secs(10))
        .expect("groups")
        .groups()
        .iter()
        .map(|g| g.name().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_prints_decoded_records_and_never_joins_a_group() {
    let env = Env::new("tail").await;
    let cfg = &env.cfg;
    let codec = Codec::new(&cfg.registry()).expect("codec");
    let producer = cfg.kafka().producer().expect("producer");
    let topic = cfg.topic(Topic::Attempts);
    let now = chrono::Utc::now().timestamp_millis();
    let (ua, ub) = (format!("{}-a", env.name), format!("{}-b", env.name));
    // Six attempts on partition 0: three two hours old, three ten minutes
    // old (Kafka timestamps), alternating users; the last one is poison
    // (negative hints) for the DLQ part.
    let mut sent = Vec::new();
    for i in 0..6_i64 {
        let user = if i % 2 == 0 { &ua } else { &ub };
        let ts = if i < 3 {
            now - 7_200_000
        } else {
            now - 600_000
        };
        let a = ConceptAttempted {
            event_id: format!("{}-e{i}", env.name),
            user_id: user.clone(),
            concept_id: "c1".into(),
            occurred_at: ts,
            correct: i % 3 == 0,
            hints_used: if i == 5 { -1 } else { i as i32 },
            duration_ms: 1_000 * (i + 1),
            rubric: None,
        };
        let bytes = codec
            .encode(&topic, EventKind::Attempt, &a)
            .await
            .expect("encode");
        producer
            .send(
                FutureRecord::to(&topic)
                    .partition(0)
                    .key(user)
                    .payload(&bytes)
                    .timestamp(ts),
                Duration::from_secs(10),
            )
            .await
            .expect("produce");
        sent.push(a);
    }
    let before = groups(cfg);

    // From the beginning: every record, decoded as sent.
    let all = tail(cfg, &["attempts", "--from-beginning"]);
    assert_eq!(all.len(), 6);
    let schema_id = all[0]["schema_id"].as_u64().expect("schema id");
    for (i, (r, a)) in all.iter().zip(&sent).enumerate() {
        assert_eq!(r["topic"], topic);
        assert_eq!(
            (r["partition"].as_i64(), r["offset"].as_i64()),
            (Some(0), Some(i as i64))
        );
        assert_eq!(r["key"], a.user_id);
        assert_eq!(r["schema_id"].as_u64(), Some(schema_id));
        let v: ConceptAttempted = serde_json::from_value(r["value"].clone()).expect("value");
        assert_eq!(&v, a);
        let ts = chrono::DateTime::parse_from_rfc3339(r["timestamp"].as_str().expect("ts"))
            .expect("RFC 3339");
        assert_eq!(ts.timestamp_millis(), a.occurred_at);
    }

    // From a time, from an offset, by count, filtered.
    let offsets = |v: &[Value]| {
        v.iter()
            .map(|r| r["offset"].as_i64().expect("offset"))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        offsets(&tail(cfg, &["attempts", "--from-time", "1h"])),
        [3, 4, 5]
    );
    let since = chrono::DateTime::from_timestamp_millis(now - 3_600_000)
        .expect("time")
        .to_rfc3339();
    assert_eq!(
        offsets(&tail(cfg, &["attempts", "--from-time", &since])),
        [3, 4, 5]
    );
    assert_eq!(
        offsets(&tail(
            cfg,
            &["attempts", "--offset", "4", "--partition", "0"]
        )),
        [4, 5]
    );
    assert_eq!(
        offsets(&tail(cfg, &["attempts", "--from-beginning", "-n", "2"])),
        [0, 1]
    );
    let b = tail(
        cfg,
        &[
            "attempts",
            "--from-beginning",
            "--where",
            &format!("user_id={ub}"),
        ],
    );
    assert_eq!(offsets(&b), [1, 3, 5]);
    let b_correct = tail(
        cfg,
        &[
            "attempts",
            "--from-beginning",
            "--where",
            &format!("key={ub}"),
            "--where",
            "correct=true",
        ],
    );
    assert_eq!(offsets(&b_correct), [3]);

    // The table: one line per record, with its key and fields.
    let (code, table) = novyra(cfg, &["tail", "attempts", "--from-beginning", "--table"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 6, "{table}");
    assert!(
        lines[1].starts_with("  0/1 ")
            && lines[1].contains(&ub)
            && lines[1].contains("hints_used=1"),
        "{table}"
    );

    // Following: a tail started at the end prints what arrives next.
    let mut follower = command(cfg)
        .args(["tail", "attempts", "--follow", "-n", "1"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("tail --follow");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let bytes = codec
        .encode(&topic, EventKind::Attempt, &sent[0])
        .await
        .expect("encode");
    producer
        .send(
            FutureRecord::to(&topic)
                .partition(0)
                .key(&ua)
                .payload(&bytes),
            Duration::from_secs(10),
        )
        .await
        .expect("produce");
    let mut line = String::new();
    BufReader::new(follower.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("a followed record");
    let followed: Value = serde_json::from_str(&line).expect("JSON");
    assert_eq!(followed["offset"].as_i64(), Some(6));
    assert!(follower.wait().expect("tail exits after -n 1").success());

    // Tailing created no consumer group.
    assert_eq!(groups(cfg), before, "tail must not join or create a group");

    // The DLQ: the pipeline refuses the poison; tail shows why and what.
    let ingest = spawn_ingest(cfg, "", &format!("{}-ingest", env.name));
    wait_caught_up(cfg, Duration::from_secs(120)).await;
    terminate(ingest);
    let dlq = tail(cfg, &["dlq", "--from-beginning"]);
    assert_eq!(dlq.len(), 1, "{dlq:?}");
    let h = &dlq[0]["headers"];
    assert_eq!(h[header::TOPIC], topic);
    assert_eq!(h[header::OFFSET], "5");
    assert_eq!(h[header::CLASS], "negative_value");
    assert_eq!(dlq[0]["value"]["event_id"], sent[5].event_id);
    assert_eq!(dlq[0]["value"]["hints_used"], -1);
    let by_reason = tail(
        cfg,
        &[
            "dlq",
            "--from-beginning",
            "--where",
            &format!("headers.{}=negative_value", header::CLASS),
        ],
    );
    assert_eq!(by_reason.len(), 1);
}

/// Publishes `n` attempts to `partition` of the attempts topic.
async fn publish_to(env: &Env, partition: i32, n: usize) {
    let cfg = &env.cfg;
    let codec = Codec::new(&cfg.registry()).expect("codec");
    let producer = cfg.kafka().producer().expect("producer");
    let topic = cfg.topic(Topic::Attempts);
    let now = chrono::Utc::now().timestamp_millis();
    for i in 0..n {
        let a = ConceptAttempted {
            event_id: format!("{}-p{partition}-e{i}", env.name),
            user_id: format!("{}-u{partition}", env.name),
            concept_id: "c1".into(),
            occurred_at: now,
            correct: i % 2 == 0,
            hints_used: 0,
            duration_ms: 1_000,
            rubric: None,
        };
        let bytes = codec
            .encode(&topic, EventKind::Attempt, &a)
            .await
            .expect("encode");
        producer
            .send(
                FutureRecord::to(&topic)
                    .partition(partition)
                    .key(&a.user_id)
                    .payload(&bytes),
                Duration::from_secs(10),
            )
            .await
            .expect("produce");
    }
}

/// Like the Unix tools it sits beside: `--last N` prints the last N records
/// per partition and exits; a reader that goes away (`| head -1`) ends the
/// output quietly; usage errors exit 2, failures 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_behaves_like_a_unix_tool() {
    let env = Env::new("tailunix").await;
    let cfg = &env.cfg;
    // More than a pipe buffer (64 KiB) of JSON on partition 0, a few on 1.
    publish_to(&env, 0, 400).await;
    publish_to(&env, 1, 4).await;

    // --last 3: the last three offsets of each partition, then exit.
    let last = tail(cfg, &["attempts", "--last", "3"]);
    let mut got: Vec<(i64, i64)> = last
        .iter()
        .map(|r| {
            (
                r["partition"].as_i64().expect("partition"),
                r["offset"].as_i64().expect("offset"),
            )
        })
        .collect();
    got.sort_unstable();
    assert_eq!(got, [(0, 397), (0, 398), (0, 399), (1, 1), (1, 2), (1, 3)]);
    let more_than_there_is = tail(cfg, &["attempts", "--last", "10", "--partition", "1"]);
    assert_eq!(more_than_there_is.len(), 4);

    // `novyra tail … | head -1`: the reader closes the pipe after one line
    // while tail still has records to write; it must end quietly.
    let mut child = command(cfg)
        .args(["tail", "attempts", "--from-beginning"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tail");
    let mut first = String::new();
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    out.read_line(&mut first).expect("one line");
    let _: Value = serde_json::from_str(&first).expect("a JSON record");
    drop(out);
    let done = child.wait_with_output().expect("tail exits");
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(
        done.status.success(),
        "a closed pipe ends tail quietly, exit 0: {:?} {stderr}",
        done.status
    );
    assert!(
        !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
        "nothing on stderr about the pipe: {stderr}"
    );

    // Exit codes: 2 for usage, 1 for a failure.
    let (usage, _) = novyra(cfg, &["tail", "attempts", "--last", "3", "--offset", "1"]);
    assert_eq!(usage, 2, "conflicting options are a usage error");
    let (missing, _) = novyra(cfg, &["tail"]);
    assert_eq!(missing, 2, "a missing argument is a usage error");
    let (failed, _) = novyra(cfg, &["tail", "no.such.topic", "--last", "1"]);
    assert_eq!(failed, 1, "a topic that does not exist is an error");
}
