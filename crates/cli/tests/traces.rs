//! OpenTelemetry traces reach the stack's real Jaeger (deploy/jaeger.sh,
//! FULL=1), and one trace follows an attempt from the ingest's Postgres
//! transaction, through the relay, to the Cypher that wrote its mastery
//! edge in Neo4j: the trace context rides the outbox row and the mastery
//! record's `traceparent` header. An attempt published with a
//! `traceparent` of its own is continued, not restarted.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use diesel::sql_types::{BigInt, Integer, Text};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use novyra_core::{ConceptAttempted, Topic};
use novyra_kafka::rdkafka::message::{Header, OwnedHeaders};
use novyra_kafka::rdkafka::producer::FutureRecord;
use novyra_pipeline::loadgen::{self, LoadgenOptions};
use novyra_registry::{Codec, EventKind};
use serde_json::Value;

/// The stack's Jaeger query API; `NOVYRA_JAEGER_ADDR` points elsewhere.
fn jaeger() -> String {
    std::env::var("NOVYRA_JAEGER_ADDR").unwrap_or_else(|_| "127.0.0.1:16686".into())
}

/// Where `novyra` sends spans; `NOVYRA_OTLP_ENDPOINT` points elsewhere.
fn otlp() -> String {
    std::env::var("NOVYRA_OTLP_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4317".into())
}

async fn jaeger_api(path: &str) -> Value {
    let url = format!("http://{}{path}", jaeger());
    let resp = reqwest::get(&url).await.unwrap_or_else(|e| {
        panic!(
            "no Jaeger at {}: start the stack with FULL=1 (make test does): {e}",
            jaeger()
        )
    });
    let body = resp.text().await.expect("Jaeger answer");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("Jaeger answered no JSON ({e}): {body}"))
}

/// One span as Jaeger's query API gives it.
#[derive(Debug)]
struct Span {
    id: String,
    operation: String,
    parent: Option<String>,
    tags: HashMap<String, String>,
    service: String,
}

fn spans(trace: &Value) -> Vec<Span> {
    let processes = &trace["processes"];
    trace["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(|s| Span {
            id: s["spanID"].as_str().unwrap_or_default().to_owned(),
            operation: s["operationName"].as_str().unwrap_or_default().to_owned(),
            parent: s["references"].as_array().and_then(|r| {
                r.iter()
                    .find(|r| r["refType"] == "CHILD_OF")
                    .and_then(|r| r["spanID"].as_str())
                    .map(str::to_owned)
            }),
            tags: s["tags"]
                .as_array()
                .map(|t| {
                    t.iter()
                        .map(|t| {
                            let v = match &t["value"] {
                                Value::String(s) => s.clone(),
                                v => v.to_string(),
                            };
                            (t["key"].as_str().unwrap_or_default().to_owned(), v)
                        })
                        .collect()
                })
                .unwrap_or_default(),
            service: processes[s["processID"].as_str().unwrap_or_default()]["serviceName"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        })
        .collect()
}

/// Whether `offset` of `partition` lies in one of `ranges`
/// (`partition:first-last,...`, as the pipeline's spans record them).
fn in_ranges(ranges: &str, partition: i32, offset: i64) -> bool {
    ranges.split(',').any(|r| {
        let Some((p, span)) = r.split_once(':') else {
            return false;
        };
        let Some((a, b)) = span.split_once('-') else {
            return false;
        };
        p.parse() == Ok(partition)
            && a.parse::<i64>().is_ok_and(|a| a <= offset)
            && b.parse::<i64>().is_ok_and(|b| offset <= b)
    })
}

#[derive(QueryableByName)]
struct Coordinates {
    #[diesel(sql_type = Integer)]
    source_partition: i32,
    #[diesel(sql_type = BigInt)]
    source_offset: i64,
    #[diesel(sql_type = Text)]
    user_id: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_an_attempt_from_postgres_to_neo4j() {
    // Jaeger is there (and fails the test clearly when it is not).
    jaeger_api("/api/services").await;
    let env = Env::new("trace").await;
    let o = LoadgenOptions {
        concepts: 6,
        domains: 2,
        students: 30,
        attempts: 600,
        seed: 17,
        rate: 0,
        days: 5,
        id_prefix: format!("{}-", env.name),
    };
    loadgen::generate_and_publish(&env.cfg, &o, true)
        .await
        .expect("publish");

    // One more attempt, published with a trace context of its own, as an
    // upstream service that traces would send it.
    let upstream_trace = format!("{:032x}", rand::random::<u128>() | 1);
    let upstream_span = format!("{:016x}", rand::random::<u64>() | 1);
    let traced = ConceptAttempted {
        event_id: format!("{}-traced", env.name),
        user_id: format!("{}-tracer", env.name),
        concept_id: format!("{}-c0000", env.name),
        occurred_at: chrono::Utc::now().timestamp_millis() - 1_000,
        correct: true,
        hints_used: 0,
        duration_ms: 900,
        rubric: None,
    };
    let codec = Codec::new(&env.cfg.registry()).expect("codec");
    let topic = env.cfg.topic(Topic::Attempts);
    let payload = codec
        .encode(&topic, EventKind::Attempt, &traced)
        .await
        .expect("encode");
    let traceparent = format!("00-{upstream_trace}-{upstream_span}-01");
    env.cfg
        .kafka()
        .producer()
        .expect("producer")
        .send(
            FutureRecord::to(&topic)
                .key(&traced.user_id)
                .payload(&payload)
                .headers(OwnedHeaders::new().insert(Header {
                    key: "traceparent",
                    value: Some(&traceparent),
                })),
            Duration::from_secs(10),
        )
        .await
        .expect("send the traced attempt");

    // The whole pipeline, exporting spans, until every group is idle; the
    // exit flushes what is still queued.
    let started_us = chrono::Utc::now().timestamp_micros() - 60_000_000;
    let status = command(&env.cfg)
        .args(["run", "--exit-when-idle"])
        .env("NOVYRA_METRICS_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp())
        .env_remove("OTEL_SERVICE_NAME")
        .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        .env_remove("OTEL_TRACES_SAMPLER")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("novyra run");
    assert!(status.success(), "novyra run exited with {status}");

    // Traces of service `novyra` in which this test's graph group wrote.
    let graph_group = env.cfg.group(novyra_core::Group::Graph.suffix());
    let tags: String = form_urlencoded::byte_serialize(
        serde_json::json!({ "messaging.consumer.group.name": graph_group })
            .to_string()
            .as_bytes(),
    )
    .collect();
    let mut c = connect(&env.cfg).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut looked_at, mut proven) = (0, None);
    while proven.is_none() && Instant::now() < deadline {
        let found = jaeger_api(&format!(
            "/api/traces?service=novyra&tags={tags}&start={started_us}&limit=200"
        ))
        .await;
        let traces = found["data"].as_array().cloned().unwrap_or_default();
        looked_at = traces.len();
        for t in &traces {
            let s = spans(t);
            assert!(s.iter().all(|s| s.service == "novyra"), "services: {s:?}");
            // The Postgres transaction of an ingest batch of this test's topic…
            let Some(pg) = s.iter().find(|s| {
                s.tags.get("db.system.name").map(String::as_str) == Some("postgresql")
                    && s.tags.get("messaging.destination.name") == Some(&topic)
            }) else {
                continue;
            };
            // …the graph batch that continued it (its parent is that very
            // transaction, reached through the outbox and the header)…
            let Some(sink) = s.iter().find(|x| {
                x.tags.get("messaging.consumer.group.name") == Some(&graph_group)
                    && x.parent.as_deref() == Some(pg.id.as_str())
            }) else {
                continue;
            };
            // …and the Cypher statement that merged the mastery edge.
            let Some(cypher) = s.iter().find(|x| {
                x.tags.get("db.system.name").map(String::as_str) == Some("neo4j")
                    && x.operation == "neo4j merge_mastery"
                    && x.parent.as_deref() == Some(sink.id.as_str())
            }) else {
                continue;
            };
            // The same attempt: the mastery record that headed the graph
            // batch was last changed by an attempt of that transaction.
            let event = sink
                .tags
                .get("novyra.last_event_id")
                .expect("head event id");
            let at: Vec<Coordinates> = diesel::sql_query(
                "SELECT source_partition, source_offset, user_id FROM concept_attempts WHERE event_id = $1",
            )
            .bind::<Text, _>(event)
            .load(&mut c)
            .await
            .expect("attempt of the trace");
            assert_eq!(at.len(), 1, "attempt {event} stored once");
            let ranges = pg
                .tags
                .get("novyra.offsets")
                .expect("offsets on the pg span");
            assert!(
                in_ranges(ranges, at[0].source_partition, at[0].source_offset),
                "attempt {event} at {}:{} is not among the transaction's offsets {ranges}",
                at[0].source_partition,
                at[0].source_offset
            );
            assert_eq!(sink.tags.get("novyra.user_id"), Some(&at[0].user_id));
            assert!(cypher.tags.contains_key("db.query.text"), "{cypher:?}");
            proven = Some((event.clone(), t["traceID"].clone()));
            break;
        }
        if proven.is_none() {
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    }
    let (event, trace_id) = proven.unwrap_or_else(|| {
        panic!("no trace of {looked_at} holds a Postgres and a Neo4j span of the same attempt")
    });
    eprintln!("trace {trace_id} follows attempt {event} from Postgres to Neo4j");

    // The relay's produce span carries the mastery topic and the offsets
    // Kafka gave the records.
    let relay_tags: String = form_urlencoded::byte_serialize(
        serde_json::json!({ "messaging.destination.name": env.cfg.topic(Topic::Mastery) })
            .to_string()
            .as_bytes(),
    )
    .collect();
    let relayed = jaeger_api(&format!(
        "/api/traces?service=novyra&operation=relay%20mastery&tags={relay_tags}&start={started_us}&limit=20"
    ))
    .await;
    let produce: Vec<Span> = relayed["data"]
        .as_array()
        .expect("traces")
        .iter()
        .flat_map(spans)
        .filter(|s| s.operation == "relay mastery")
        .collect();
    assert!(!produce.is_empty(), "no relay span: {relayed}");
    assert!(
        produce.iter().all(|s| s
            .tags
            .get("novyra.offsets")
            .is_some_and(|o| o.contains(':') && o.contains('-'))),
        "relay spans without offsets: {produce:?}"
    );

    // The upstream trace was continued: its trace holds the ingest batch
    // as a child of the upstream span, and that batch's Postgres write.
    let upstream = jaeger_api(&format!("/api/traces/{upstream_trace}")).await;
    let traced_spans: Vec<Span> = upstream["data"]
        .as_array()
        .and_then(|d| <[Value]>::first(d))
        .map(spans)
        .unwrap_or_else(|| panic!("no trace {upstream_trace}: {upstream}"));
    let ingest = traced_spans
        .iter()
        .find(|s| s.operation == "ingest attempts")
        .unwrap_or_else(|| panic!("no ingest span in the upstream trace: {traced_spans:?}"));
    assert_eq!(ingest.parent.as_deref(), Some(upstream_span.as_str()));
    assert!(
        traced_spans
            .iter()
            .any(|s| s.parent.as_deref() == Some(ingest.id.as_str())
                && s.tags.get("db.system.name").map(String::as_str) == Some("postgresql")),
        "no Postgres span under the ingest batch: {traced_spans:?}"
    );
}
