//! End to end against the real local stack (`make test` starts it): publish
//! a generated curriculum and attempts plus poison and duplicates, run every
//! group until idle, then assert rows, edges and values.
//!
//! The test uses its own topic prefix, consumer groups, Postgres schema and
//! id prefix, so it can run beside a demo or other tests.

mod common;

use std::time::Duration;

use novyra_core::keys;
use novyra_core::Topic;
use novyra_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use novyra_kafka::rdkafka::message::{Headers, Message, OwnedMessage};
use novyra_kafka::rdkafka::producer::FutureRecord;
use novyra_kafka::rdkafka::{Offset, TopicPartitionList};
use novyra_pipeline::loadgen::{self, LoadgenOptions};
use novyra_pipeline::run::{self, Worker};
use novyra_pipeline::{CancellationToken, Config};
use novyra_registry::{Codec, EventKind};

fn test_config(tag: &str) -> Config {
    let mut cfg = common::config(tag);
    cfg.pipeline.max_batch = 500;
    cfg
}

fn dlq_records(cfg: &Config) -> Vec<(String, String)> {
    let c: BaseConsumer = cfg.kafka().reader_config().create().expect("reader");
    let topic = cfg.topic(Topic::Dlq);
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset(&topic, p, Offset::Beginning)
            .expect("partition");
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::time::Instant::now() < deadline {
        match c.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => {
                let h = m.headers().expect("dlq records carry headers");
                let get = |name: &str| {
                    h.iter()
                        .find(|x| x.key == name)
                        .and_then(|x| x.value)
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .unwrap_or_default()
                };
                out.push((
                    get("__connect.errors.exception.class.name"),
                    get("__connect.errors.topic"),
                ));
            }
            Some(Err(e)) => panic!("dlq read: {e}"),
            None if out.len() >= 2 => break,
            None => {}
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_stores_every_distinct_attempt_and_mirrors_mastery_in_the_graph() {
    let cfg = test_config("e2e");
    common::setup(&cfg).await;
    let o = LoadgenOptions {
        concepts: 12,
        domains: 3,
        students: 30,
        attempts: 1_500,
        seed: 7,
        rate: 0,
        days: 70,
        id_prefix: format!("{}-", cfg.topic_prefix.trim_end_matches('.')),
    };
    let published = loadgen::generate_and_publish(&cfg, &o, true)
        .await
        .expect("publish");
    assert_eq!(published.attempts, 1_500);

    // Re-publish 40 attempts (a producer retry): they must be stored once.
    let now = chrono::Utc::now().timestamp_millis();
    let c = loadgen::curriculum(&o, now);
    let again: Vec<_> = loadgen::attempts(&o, &c, now)
        .into_iter()
        .take(40)
        .map(|a| (a.user_id.clone(), a))
        .collect();
    let codec = Codec::new(&cfg.registry()).expect("codec");
    let producer = cfg.kafka().producer().expect("producer");
    let attempts_topic = cfg.topic(Topic::Attempts);
    loadgen::publish(
        &codec,
        &producer,
        &attempts_topic,
        EventKind::Attempt,
        &again,
        0,
        true,
    )
    .await
    .expect("dups");

    // Poison: a bad magic byte, and a valid Avro attempt with negative hints.
    let user = format!("{}u00000", o.id_prefix);
    producer
        .send(
            FutureRecord::to(&attempts_topic)
                .key(&user)
                .payload(&[7u8, 1, 2, 3, 4, 5][..]),
            Duration::from_secs(10),
        )
        .await
        .expect("poison 1");
    let mut bad = again[0].1.clone();
    bad.event_id = "poison-negative-hints".into();
    bad.hints_used = -2;
    let bytes = codec
        .encode(&attempts_topic, EventKind::Attempt, &bad)
        .await
        .expect("encode");
    producer
        .send(
            FutureRecord::to(&attempts_topic)
                .key(&bad.user_id)
                .payload(&bytes),
            Duration::from_secs(10),
        )
        .await
        .expect("poison 2");

    tokio::time::timeout(
        Duration::from_secs(240),
        run::run(&cfg, &Worker::ALL, true, CancellationToken::new()),
    )
    .await
    .expect("pipeline went idle in time")
    .expect("pipeline ran");

    let store = novyra_store::Store::new(&cfg.store()).expect("store");
    let counts = store.table_counts().await.expect("counts");
    assert_eq!(
        counts.concept_attempts, 1_500,
        "every distinct attempt stored once"
    );
    assert_eq!(counts.concepts, 12);
    assert_eq!(counts.concept_prerequisites as usize, published.links);
    assert_eq!(counts.mastery_records as usize, published.pairs);
    assert_eq!(counts.mastery_records, counts.attempted_pairs);
    // Rubric evaluations land as JSONB, one per attempt that carries one.
    let rubrics = loadgen::attempts(&o, &c, now)
        .iter()
        .filter(|a| a.rubric.is_some())
        .count();
    assert!(rubrics > 0, "the generator emits some rubrics");
    assert_eq!(counts.rubric_evaluations as usize, rubrics);

    // Independent recomputation of BKT, bit for bit.
    let (n, bad_rows, finals) = novyra_pipeline::summary::recompute(
        &store.attempts_in_applied_order().await.expect("audit"),
        &store.catalogue_params().await.expect("catalogue"),
    );
    assert_eq!((n, bad_rows), (1_500, 0));
    let mastery = store.mastery_rows().await.expect("mastery");
    for m in &mastery {
        let expect = finals[&(m.user_id.clone(), m.concept_id.clone())];
        assert_eq!(
            expect.to_bits(),
            m.mastery.to_bits(),
            "mastery of {}/{}",
            m.user_id,
            m.concept_id
        );
        assert_eq!(m.version, m.attempts_total);
    }

    // The graph holds one MASTERED_BY edge per mastery row, same score and version.
    let graph = cfg.graph().expect("graph");
    let edges = graph.mastery_edges(&o.id_prefix).await.expect("edges");
    assert_eq!(edges.len(), mastery.len());
    for ((u, c, score, version), m) in edges.iter().zip(&mastery) {
        assert_eq!((u, c), (&m.user_id, &m.concept_id));
        assert_eq!(score.to_bits(), m.mastery.to_bits());
        assert_eq!(*version, m.version);
    }
    let key = keys::mastery_key(&mastery[0].user_id, &mastery[0].concept_id);
    assert!(key.contains('/'));

    // Both poison records are in the DLQ with a reason and their source topic.
    let dlq = dlq_records(&cfg);
    let mut reasons: Vec<&str> = dlq.iter().map(|(r, _)| r.as_str()).collect();
    reasons.sort_unstable();
    assert_eq!(reasons, vec!["bad_magic_byte", "negative_value"]);
    assert!(dlq.iter().all(|(_, t)| *t == attempts_topic));

    // Every mastery record says where its freshness is measured from: the
    // Kafka timestamp of one of its own pair's attempts (the oldest of the
    // batch that applied it), never its own time or another pair's.
    let mut sent: std::collections::HashMap<String, Vec<i64>> = Default::default();
    for m in all_records(&cfg, &attempts_topic) {
        let Some(p) = m.payload() else { continue };
        let Ok(a) = codec
            .decode::<novyra_core::ConceptAttempted>(EventKind::Attempt, p)
            .await
        else {
            continue;
        };
        let t = m
            .timestamp()
            .to_millis()
            .expect("attempts carry a timestamp");
        sent.entry(keys::mastery_key(&a.value.user_id, &a.value.concept_id))
            .or_default()
            .push(t);
    }
    let updates = all_records(&cfg, &cfg.topic(Topic::Mastery));
    assert!(updates.len() >= mastery.len(), "{} updates", updates.len());
    for m in &updates {
        let key = String::from_utf8_lossy(m.key().expect("keyed")).into_owned();
        let from = novyra_pipeline::metrics::source_ts(m)
            .unwrap_or_else(|| panic!("update of {key} has no source timestamp"));
        assert!(
            sent.get(&key).is_some_and(|ts| ts.contains(&from)),
            "update of {key} measured from {from}, not one of its attempts {:?}",
            sent.get(&key)
        );
    }
}

/// Every record on `topic`, from the start to its end as of now.
fn all_records(cfg: &Config, topic: &str) -> Vec<OwnedMessage> {
    let c: BaseConsumer = cfg.kafka().reader_config().create().expect("reader");
    let meta = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("metadata");
    let mut tpl = TopicPartitionList::new();
    let mut left = 0;
    for p in meta.topics()[0].partitions() {
        let (lo, hi) = c
            .fetch_watermarks(topic, p.id(), Duration::from_secs(10))
            .expect("watermarks");
        left += hi - lo;
        tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
            .expect("partition");
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while (out.len() as i64) < left {
        assert!(
            std::time::Instant::now() < deadline,
            "{topic}: {} of {left} read",
            out.len()
        );
        match c.poll(Duration::from_millis(500)) {
            Some(Ok(m)) => out.push(m.detach()),
            Some(Err(e)) => panic!("{topic} read: {e}"),
            None => {}
        }
    }
    out
}
