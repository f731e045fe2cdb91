//! A record Neo4j refuses for a data reason (here: a uniqueness constraint
//! an operator added, which one concept's new name violates) goes to the
//! DLQ with the server's reason, and the rest of its batch is written: the
//! graph sink neither stalls on it nor drops its neighbours.

mod common;

use std::time::Duration;

use neo4rs::query;
use novyra_core::Topic;
use novyra_core::{keys, ConceptUpserted, MasteryUpdated};
use novyra_kafka::dlq::header;
use novyra_kafka::rdkafka::producer::FutureRecord;
use novyra_pipeline::run::{self, Worker};
use novyra_pipeline::CancellationToken;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_neo4j_refuses_goes_to_the_dlq_and_its_batch_lands() {
    let cfg = common::config("grej");
    common::setup(&cfg).await;
    let tag = cfg.topic_prefix.trim_end_matches('.').to_owned();
    let p = format!("{tag}-");
    let neo =
        neo4rs::Graph::new(&cfg.neo4j.uri, &cfg.neo4j.user, &cfg.neo4j.password).expect("neo4j");
    cfg.graph()
        .expect("graph")
        .ensure_schema()
        .await
        .expect("schema");

    // The operator's constraint, on a label only this test's nodes carry.
    let label = format!("Frozen_{tag}");
    neo.run(query(&format!(
        "CREATE CONSTRAINT frozen_{tag} IF NOT EXISTS FOR (n:{label}) REQUIRE n.name IS UNIQUE"
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
        .expect("seed node");
    }

    let codec = Codec::new(&cfg.registry()).expect("codec");
    let producer = cfg.kafka().producer().expect("producer");
    let now = chrono::Utc::now().timestamp_millis();
    let concept = |id: &str, name: &str| ConceptUpserted {
        concept_id: format!("{p}{id}"),
        name: name.into(),
        domain: format!("{p}math"),
        difficulty: 0.5,
        updated_at: now,
        bkt_p_init: None,
        bkt_p_transit: None,
        bkt_p_slip: None,
        bkt_p_guess: None,
    };
    let concepts = cfg.topic(Topic::Concepts);
    let mut bad = None;
    for (c, refused) in [
        (concept("c1", "One"), false),
        (concept("b", "Alpha"), true),
        (concept("c2", "Two"), false),
    ] {
        let bytes = codec
            .encode(&concepts, EventKind::Concept, &c)
            .await
            .expect("encode");
        let d = producer
            .send(
                FutureRecord::to(&concepts)
                    .key(&c.concept_id)
                    .payload(&bytes),
                Duration::from_secs(10),
            )
            .await
            .expect("produce");
        if refused {
            bad = Some((d.partition, d.offset));
        }
    }
    let mastery = cfg.topic(Topic::Mastery);
    let m = MasteryUpdated {
        user_id: format!("{p}u1"),
        concept_id: format!("{p}c1"),
        mastery: 0.7,
        version: 1,
        attempts_total: 1,
        attempts_correct: 1,
        confidence_weight: 1.0,
        last_event_id: "e1".into(),
        updated_at: now,
    };
    let bytes = codec
        .encode(&mastery, EventKind::Mastery, &m)
        .await
        .expect("encode");
    producer
        .send(
            FutureRecord::to(&mastery)
                .key(&keys::mastery_key(&m.user_id, &m.concept_id))
                .payload(&bytes),
            Duration::from_secs(10),
        )
        .await
        .expect("produce");

    let ran = tokio::time::timeout(
        Duration::from_secs(120),
        run::run(&cfg, &[Worker::Graph], true, CancellationToken::new()),
    )
    .await;
    neo.run(query(&format!("DROP CONSTRAINT frozen_{tag} IF EXISTS")))
        .await
        .expect("drop constraint");
    ran.expect("graph sink went idle in time (caught up past the refused record)")
        .expect("graph sink ran");

    // The refused record is in the DLQ with Neo4j's reason ...
    let got = common::dlq(&cfg, 2);
    assert_eq!(got.len(), 1, "exactly the refused record: {got:?}");
    let h = &got[0];
    let (partition, offset) = bad.expect("sent");
    assert_eq!(h[header::TOPIC], concepts);
    assert_eq!(h[header::PARTITION], partition.to_string());
    assert_eq!(h[header::OFFSET], offset.to_string());
    assert_eq!(h[header::STAGE], "write");
    assert_eq!(h[header::CLASS], "write_rejected");
    assert!(
        h[header::MESSAGE].contains("ConstraintValidationFailed"),
        "the server's reason: {}",
        h[header::MESSAGE]
    );
    // ... the node it would have changed is untouched, and its neighbours
    // in the batch landed.
    assert_eq!(
        name_of(&neo, &format!("{p}b")).await.as_deref(),
        Some("Beta")
    );
    assert_eq!(
        name_of(&neo, &format!("{p}c1")).await.as_deref(),
        Some("One")
    );
    assert_eq!(
        name_of(&neo, &format!("{p}c2")).await.as_deref(),
        Some("Two")
    );
    let edges = cfg
        .graph()
        .expect("graph")
        .mastery_edge_states(&p)
        .await
        .expect("edges");
    assert_eq!(edges.len(), 1);
    assert_eq!((edges[0].score, edges[0].version), (0.7, 1));
}
