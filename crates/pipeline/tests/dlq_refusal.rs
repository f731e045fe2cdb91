//! A DLQ that refuses a record for good (here: larger than the DLQ topic's
//! `max.message.bytes`) stops the ingest worker with an error instead of
//! retrying in silence, and the partition does not move past the record:
//! after the operator fixes the DLQ topic, the record lands there and the
//! good record behind it is stored.

mod common;

use std::time::Duration;

use novyra_core::ConceptAttempted;
use novyra_core::Topic;
use novyra_kafka::rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
use novyra_kafka::rdkafka::client::DefaultClientContext;
use novyra_kafka::rdkafka::producer::FutureRecord;
use novyra_pipeline::run::{self, Worker, WorkerError};
use novyra_pipeline::CancellationToken;
use novyra_registry::{Codec, EventKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stops_loudly_when_the_dlq_refuses_a_record() {
    let cfg = common::config("dlqrefuse");
    // The DLQ topic first, with a size limit the poison record exceeds.
    let mut specs = novyra_kafka::topics::pipeline_topics(-1);
    for s in &mut specs {
        if s.suffix == "dlq" {
            s.configs.push(("max.message.bytes", "2048".into()));
        }
    }
    novyra_kafka::topics::ensure(&cfg.kafka(), &cfg.topic_prefix, &specs, None)
        .await
        .expect("topics");
    common::setup(&cfg).await;

    let codec = Codec::new(&cfg.registry()).expect("codec");
    let producer = cfg.kafka().producer().expect("producer");
    let topic = cfg.topic(Topic::Attempts);
    let user = format!("{}-u1", cfg.topic_prefix);
    let good = codec
        .encode(
            &topic,
            EventKind::Attempt,
            &ConceptAttempted {
                event_id: "good-after-poison".into(),
                user_id: user.clone(),
                concept_id: "c1".into(),
                occurred_at: chrono::Utc::now().timestamp_millis() - 60_000,
                correct: true,
                hints_used: 0,
                duration_ms: 30_000,
                rubric: None,
            },
        )
        .await
        .expect("encode");
    // Not a Confluent frame (first byte 7), and incompressible, so the
    // producer's compression cannot bring it under the limit.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let poison: Vec<u8> = std::iter::once(7u8)
        .chain((0..8_000).map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        }))
        .collect();
    for payload in [&poison, &good] {
        producer
            .send(
                FutureRecord::to(&topic).key(&user).payload(payload),
                Duration::from_secs(30),
            )
            .await
            .expect("produce");
    }

    let ran = tokio::time::timeout(
        Duration::from_secs(120),
        run::run(&cfg, &[Worker::Ingest], false, CancellationToken::new()),
    )
    .await
    .expect("the worker stops by itself");
    match ran {
        Err(WorkerError::Kafka(e)) => {
            assert!(novyra_kafka::is_permanent_produce_error(&e), "{e}")
        }
        other => panic!("expected a permanent Kafka error, got {other:?}"),
    }
    let store = novyra_store::Store::new(&cfg.store()).expect("store");
    assert_eq!(
        store.table_counts().await.expect("counts").concept_attempts,
        0,
        "nothing behind the refused record was stored"
    );
    assert!(
        store
            .stored_offsets(&cfg.group("ingest"), &topic)
            .await
            .expect("offsets")
            .values()
            .all(|&o| o == 0),
        "the partition did not move past the refused record"
    );

    // The operator raises the limit: the record reaches the DLQ, and the
    // good record behind it is stored.
    let admin: AdminClient<DefaultClientContext> = cfg.kafka().client(&[]).create().expect("admin");
    let dlq = cfg.topic(Topic::Dlq);
    let alter = novyra_kafka::rdkafka::admin::AlterConfig::new(ResourceSpecifier::Topic(&dlq))
        .set("max.message.bytes", "1048588");
    admin
        .alter_configs([&alter], &AdminOptions::new())
        .await
        .expect("alter")
        .into_iter()
        .for_each(|r| {
            r.expect("altered");
        });
    tokio::time::timeout(
        Duration::from_secs(120),
        run::run(&cfg, &[Worker::Ingest], true, CancellationToken::new()),
    )
    .await
    .expect("idle in time")
    .expect("ran");
    assert_eq!(
        store.table_counts().await.expect("counts").concept_attempts,
        1
    );
    let headers = common::dlq(&cfg, 1);
    assert_eq!(headers.len(), 1);
    assert_eq!(
        headers[0]
            .get(novyra_kafka::dlq::header::CLASS)
            .map(String::as_str),
        Some("bad_magic_byte")
    );
}
