//! Every kind of poison on the attempts topic lands in the DLQ with its
//! reason, source topic, partition and offset, and the partition moves on:
//! the good records around the poison are stored.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use novyra_core::ConceptAttempted;
use novyra_core::Topic;
use novyra_kafka::dlq::header;
use novyra_kafka::rdkafka::producer::FutureRecord;
use novyra_pipeline::run::{self, Worker};
use novyra_pipeline::CancellationToken;
use novyra_registry::{Codec, EventKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advances_offset_past_every_kind_of_poison() {
    let cfg = common::config("poison");
    common::setup(&cfg).await;
    let codec = Codec::new(&cfg.registry()).expect("codec");
    let producer = cfg.kafka().producer().expect("producer");
    let topic = cfg.topic(Topic::Attempts);
    let user = format!("{}-u1", cfg.topic_prefix);
    let now = chrono::Utc::now().timestamp_millis();
    let attempt = |id: &str| ConceptAttempted {
        event_id: id.into(),
        user_id: user.clone(),
        concept_id: "c1".into(),
        occurred_at: now - 60_000,
        correct: true,
        hints_used: 0,
        duration_ms: 30_000,
        rubric: None,
    };
    let encode = |a: ConceptAttempted| {
        let (codec, topic) = (&codec, &topic);
        async move {
            codec
                .encode(topic, EventKind::Attempt, &a)
                .await
                .expect("encode")
        }
    };
    let good = encode(attempt("good-1")).await;
    let mut unknown_id = good.clone();
    unknown_id[1..5].copy_from_slice(&0x7fff_fff0_u32.to_be_bytes());
    let truncated = good[..good.len() / 2].to_vec();
    let with = |f: fn(&mut ConceptAttempted)| {
        let mut a = attempt("bad");
        f(&mut a);
        encode(a)
    };

    // (payload or tombstone, expected reason); good records in between.
    let records: Vec<(Option<Vec<u8>>, &str)> = vec![
        (Some(good.clone()), "stored"),
        (Some(vec![7, 1, 2, 3, 4, 5]), "bad_magic_byte"),
        (Some(unknown_id), "unknown_schema_id"),
        (Some(truncated), "malformed_avro"),
        (Some(vec![0, 0]), "truncated_header"),
        (
            Some(with(|a| a.event_id = String::new()).await),
            "invalid_id",
        ),
        (
            Some(with(|a| a.concept_id = " ".into()).await),
            "invalid_id",
        ),
        (Some(with(|a| a.hints_used = -1).await), "negative_value"),
        (Some(with(|a| a.duration_ms = -5).await), "negative_value"),
        (
            Some(with(|a| a.occurred_at += 3 * 86_400_000).await),
            "time_out_of_range",
        ),
        (
            Some(with(|a| a.occurred_at = 915_148_800_000).await),
            "time_out_of_range",
        ),
        (
            Some(with(|a| a.user_id = "someone-else".into()).await),
            "key_mismatch",
        ),
        (None, "unexpected_tombstone"),
        (Some(encode(attempt("good-2")).await), "stored"),
    ];
    let mut sent = Vec::new();
    for (payload, reason) in &records {
        let mut r: FutureRecord<'_, str, [u8]> = FutureRecord::to(&topic).key(&user);
        if let Some(p) = payload {
            r = r.payload(p);
        }
        let d = producer
            .send(r, Duration::from_secs(10))
            .await
            .expect("produce");
        sent.push((d.partition, d.offset, *reason));
    }

    tokio::time::timeout(
        Duration::from_secs(120),
        run::run(&cfg, &[Worker::Ingest], true, CancellationToken::new()),
    )
    .await
    .expect("ingest went idle in time")
    .expect("ingest ran");

    // The good records around the poison are stored, and the partition's
    // stored offset is past the last record.
    let store = novyra_store::Store::new(&cfg.store()).expect("store");
    assert_eq!(
        store.table_counts().await.expect("counts").concept_attempts,
        2
    );
    let (partition, last, _) = sent[sent.len() - 1];
    let stored = store
        .stored_offsets(&cfg.group("ingest"), &topic)
        .await
        .expect("offsets");
    assert_eq!(stored.get(&partition), Some(&(last + 1)));

    let poison: Vec<_> = sent.iter().filter(|s| s.2 != "stored").collect();
    let got = common::dlq(&cfg, poison.len());
    assert_eq!(
        got.len(),
        poison.len(),
        "one DLQ record per poison: {got:?}"
    );
    let mut by_offset: BTreeMap<i64, &BTreeMap<String, String>> = BTreeMap::new();
    for h in &got {
        assert_eq!(h[header::TOPIC], topic);
        assert_eq!(h[header::PARTITION], partition.to_string());
        assert!(!h[header::MESSAGE].is_empty(), "a readable reason: {h:?}");
        by_offset.insert(h[header::OFFSET].parse().expect("offset header"), h);
    }
    for (_, offset, reason) in poison {
        let h = by_offset
            .get(offset)
            .unwrap_or_else(|| panic!("no DLQ record for offset {offset} ({reason})"));
        assert_eq!(h[header::CLASS], *reason, "offset {offset}");
    }
}
