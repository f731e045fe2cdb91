//! Schema evolution under BACKWARD compatibility: a v2 ConceptAttempted
//! with one more optional field registers next to v1; the pipeline (a v1
//! consumer) ingests v2 events, and a v2 consumer reads v1 events with the
//! new field at its default. An incompatible change is refused.

mod common;

use std::time::Duration;

use novyra_core::ConceptAttempted;
use novyra_core::Topic;
use novyra_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use novyra_kafka::rdkafka::message::Message;
use novyra_kafka::rdkafka::producer::FutureRecord;
use novyra_kafka::rdkafka::{Offset, TopicPartitionList};
use novyra_pipeline::run::{self, Worker};
use novyra_pipeline::CancellationToken;
use novyra_registry::apache_avro::{self, Schema};
use novyra_registry::{wire, Codec, EventKind};
use serde::{Deserialize, Serialize};

const V2: &str = include_str!("fixtures/ConceptAttempted.v2.avsc");
const INCOMPATIBLE: &str = include_str!("fixtures/ConceptAttempted.incompatible.avsc");

/// What a consumer built against v2 sees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct AttemptV2 {
    event_id: String,
    user_id: String,
    concept_id: String,
    occurred_at: i64,
    correct: bool,
    hints_used: i32,
    duration_ms: i64,
    rubric: Option<novyra_core::RubricEvaluation>,
    device: Option<String>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_and_v2_consumers_read_each_others_events() {
    let cfg = common::config("evo");
    let run = cfg.database.schema.clone().expect("schema");
    let codec = Codec::new(&cfg.registry()).expect("codec");
    let ids = common::setup(&cfg).await;
    let topic = cfg.topic(Topic::Attempts);
    let subject = format!("{topic}-value");
    let v1_id = ids
        .iter()
        .find(|(s, _)| *s == subject)
        .map(|(_, id)| *id)
        .expect("v1 id");

    // v2 is BACKWARD compatible and registers; a required new field is not.
    let record = EventKind::Attempt.record_name();
    let v2_id = codec
        .register(&subject, record, V2)
        .await
        .expect("v2 registers");
    assert_ne!(v1_id, v2_id);
    let refused = codec.register(&subject, record, INCOMPATIBLE).await;
    assert!(refused.is_err(), "an incompatible schema must be refused");

    // One event written with v1, one with v2.
    let user = format!("{run}-u1");
    let now = chrono::Utc::now().timestamp_millis();
    let v1_event = ConceptAttempted {
        event_id: format!("{run}-e1"),
        user_id: user.clone(),
        concept_id: "c1".into(),
        occurred_at: now - 120_000,
        correct: true,
        hints_used: 0,
        duration_ms: 20_000,
        rubric: None,
    };
    let v2_event = AttemptV2 {
        event_id: format!("{run}-e2"),
        user_id: user.clone(),
        concept_id: "c1".into(),
        occurred_at: now - 60_000,
        correct: false,
        hints_used: 1,
        duration_ms: 40_000,
        rubric: None,
        device: Some("tablet".into()),
    };
    let v2_schema = Schema::parse_str(V2).expect("v2 parses");
    let v2_body = apache_avro::writer::datum::GenericDatumWriter::builder(&v2_schema)
        .build()
        .expect("v2 writer")
        .write_value_to_vec(apache_avro::to_value(&v2_event).expect("to value"))
        .expect("v2 body");
    let payloads = [
        codec
            .encode(&topic, EventKind::Attempt, &v1_event)
            .await
            .expect("v1 payload"),
        wire::frame(v2_id, &v2_body),
    ];
    let producer = cfg.kafka().producer().expect("producer");
    for p in &payloads {
        producer
            .send(
                FutureRecord::to(&topic).key(&user).payload(p),
                Duration::from_secs(10),
            )
            .await
            .expect("produce");
    }

    // The pipeline is a v1 consumer: both events are stored, each with its
    // writer's schema id.
    tokio::time::timeout(
        Duration::from_secs(120),
        run::run(&cfg, &[Worker::Ingest], true, CancellationToken::new()),
    )
    .await
    .expect("ingest went idle in time")
    .expect("ingest ran");
    let store = novyra_store::Store::new(&cfg.store()).expect("store");
    assert_eq!(
        store.table_counts().await.expect("counts").concept_attempts,
        2
    );
    let mut schema_ids = store.attempt_schema_ids().await.expect("schema ids");
    schema_ids.sort_unstable();
    let mut expected = vec![v1_id as i32, v2_id as i32];
    expected.sort_unstable();
    assert_eq!(schema_ids, expected);

    // A v2 consumer reads both: the v1 event gets the default device.
    let reader: BaseConsumer = cfg.kafka().reader_config().create().expect("reader");
    let mut tpl = TopicPartitionList::new();
    for p in 0..12 {
        tpl.add_partition_offset(&topic, p, Offset::Beginning)
            .expect("partition");
    }
    reader.assign(&tpl).expect("assign");
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while seen.len() < 2 && std::time::Instant::now() < deadline {
        if let Some(m) = reader.poll(Duration::from_millis(300)) {
            let m = m.expect("read");
            let d = codec
                .decode_as::<AttemptV2>(&v2_schema, record, m.payload().expect("payload"))
                .await
                .expect("v2 consumer decodes");
            seen.push(d.value);
        }
    }
    seen.sort_by(|a, b| a.event_id.cmp(&b.event_id));
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].event_id, v1_event.event_id);
    assert_eq!(seen[0].device, None, "v1 event read with v2's default");
    assert_eq!(seen[0].occurred_at, v1_event.occurred_at);
    assert_eq!(seen[1], v2_event);
}
