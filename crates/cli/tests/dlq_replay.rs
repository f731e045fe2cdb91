//! The DLQ runbook end to end: Neo4j refuses a concept (an operator's
//! uniqueness constraint it violates), the graph sink dead-letters it; the
//! operator fixes the cause (drops the constraint), lists the DLQ, dry-runs
//! the replay (nothing sent), replays by reason class, and the running
//! sink applies the record.

mod common;

use std::time::{Duration, Instant};

use common::*;
use neo4rs::query;
use novyra_core::ConceptUpserted;
use novyra_core::Topic;
use novyra_kafka::rdkafka::producer::FutureRecord;
use novyra_registry::{Codec, EventKind};

async fn name_of(g: &neo4rs::Graph, id: &str) -> Option<String> {
    let mut rows = g
        .execute(query("MATCH (c:Concept {id: $id}) RETURN c.name AS name").param("id", id))
        .await
        .expect("cypher");
    rows.next()
        .await
        .expect("row")
        .and_then(|r| r.get::<String>("name").ok())
}

fn end_offsets(env: &Env, kind: Topic) -> i64 {
    let c: novyra_kafka::rdkafka::consumer::BaseConsumer =
        env.cfg.kafka().reader_config().create().expect("client");
    novyra_kafka::lag::watermarks(&c, &env.cfg.topic(kind), Duration::from_secs(10))
        .expect("marks")
        .iter()
        .map(|(_, _, high)| high)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_replay_to_their_source_after_the_fix() {
    let env = Env::new("dlqr").await;
    let p = format!("{}-", env.name);
    let cfg = &env.cfg;
    let neo =
        neo4rs::Graph::new(&cfg.neo4j.uri, &cfg.neo4j.user, &cfg.neo4j.password).expect("neo4j");
    cfg.graph()
        .expect("graph")
        .ensure_schema()
        .await
        .expect("schema");
    let label = format!("Frozen_{}", env.name);
    neo.run(query(&format!(
        "CREATE CONSTRAINT frozen_{} IF NOT EXISTS FOR (n:{label}) REQUIRE n.name IS UNIQUE",
        env.name
    )))
    .await
    .expect("constraint");
    for (id, name) in [("a", "Alpha"), ("b", "Beta")] {
        neo.run(
            query(&format!(
                "MERGE (c:Concept {{id: $id}}) SET c:{label}, c.name = $name"
            ))
            .param("id", format!("{p}{id}"))
            .param("name", name),
        )
        .await
        .expect("seed");
    }
    let graph = spawn_worker(
        "graph",
        cfg,
        "",
        &format!("{}-graph", env.name),
        "127.0.0.1:0",
    );

    // A concept renamed to a name the constraint forbids, then a good one.
    let codec = Codec::new(&cfg.registry()).expect("codec");
    let producer = cfg.kafka().producer().expect("producer");
    let topic = cfg.topic(Topic::Concepts);
    let now = chrono::Utc::now().timestamp_millis();
    for (id, name) in [("b", "Alpha"), ("c", "Gamma")] {
        let c = ConceptUpserted {
            concept_id: format!("{p}{id}"),
            name: name.into(),
            domain: format!("{p}d"),
            difficulty: 0.4,
            updated_at: now,
            bkt_p_init: None,
            bkt_p_transit: None,
            bkt_p_slip: None,
            bkt_p_guess: None,
        };
        let bytes = codec
            .encode(&topic, EventKind::Concept, &c)
            .await
            .expect("encode");
        producer
            .send(
                FutureRecord::to(&topic).key(&c.concept_id).payload(&bytes),
                Duration::from_secs(10),
            )
            .await
            .expect("produce");
    }
    wait_group_caught_up(cfg, &cfg.group("graph"), Duration::from_secs(120)).await;
    assert_eq!(
        name_of(&neo, &format!("{p}c")).await.as_deref(),
        Some("Gamma")
    );
    assert_eq!(
        name_of(&neo, &format!("{p}b")).await.as_deref(),
        Some("Beta")
    );

    // The operator looks: one dead letter, refused by the write.
    let (code, listed) = novyra(cfg, &["dlq", "list"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = listed.lines().collect();
    assert_eq!(lines.len(), 1, "{listed}");
    assert!(
        lines[0].contains("write_rejected") && lines[0].contains(&topic),
        "{listed}"
    );

    // The fix, a dry run (nothing sent), then the replay by class.
    neo.run(query(&format!(
        "DROP CONSTRAINT frozen_{} IF EXISTS",
        env.name
    )))
    .await
    .expect("drop constraint");
    let before = end_offsets(&env, Topic::Concepts);
    let (code, dry) = novyra(
        cfg,
        &["dlq", "replay", "--class", "write_rejected", "--dry-run"],
    );
    assert_eq!(code, 0);
    assert!(dry.contains("would replay 1 dead letter"), "{dry}");
    assert_eq!(
        end_offsets(&env, Topic::Concepts),
        before,
        "a dry run sends nothing"
    );
    let (code, none) = novyra(cfg, &["dlq", "replay", "--class", "no_such_class"]);
    assert_eq!(code, 0);
    assert!(none.contains("replayed 0 dead letter"), "{none}");
    let (code, out) = novyra(
        cfg,
        &[
            "dlq",
            "replay",
            "--class",
            "write_rejected",
            "--source",
            "concepts",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("replayed 1 dead letter"), "{out}");
    assert_eq!(end_offsets(&env, Topic::Concepts), before + 1);

    // The running sink applies it; nothing new is dead-lettered.
    let started = Instant::now();
    while name_of(&neo, &format!("{p}b")).await.as_deref() != Some("Alpha") {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the replayed record was not applied"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    wait_group_caught_up(cfg, &cfg.group("graph"), Duration::from_secs(60)).await;
    terminate(graph);
    let (_, after) = novyra(cfg, &["dlq", "list"]);
    assert_eq!(after.lines().count(), 1, "{after}");
}
