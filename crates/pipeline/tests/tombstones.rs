//! Tombstones on the compacted topics delete what they name, in Postgres
//! and in Neo4j: a concept (with its edges), a prerequisite link, and a
//! mastery edge.

mod common;

use std::time::Duration;

use novyra_core::keys;
use novyra_core::Topic;
use novyra_kafka::rdkafka::producer::FutureRecord;
use novyra_pipeline::loadgen::{self, LoadgenOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_delete_concepts_links_and_mastery_edges() {
    let cfg = common::config("ts");
    let run_id = cfg.database.schema.clone().expect("schema");
    common::setup(&cfg).await;
    let o = LoadgenOptions {
        concepts: 6,
        domains: 2,
        students: 4,
        attempts: 120,
        seed: 3,
        rate: 0,
        days: 30,
        id_prefix: format!("{run_id}-"),
    };
    let p = loadgen::generate_and_publish(&cfg, &o, true)
        .await
        .expect("publish");
    common::run_all(&cfg).await;

    let store = novyra_store::Store::new(&cfg.store()).expect("store");
    let graph = cfg.graph().expect("graph");
    let before = store.table_counts().await.expect("counts");
    assert_eq!(before.concepts, 6);
    let links = graph.prerequisite_links(&o.id_prefix).await.expect("links");
    assert_eq!(links.len(), p.links);
    let edges = graph.mastery_edges(&o.id_prefix).await.expect("edges");
    assert!(!edges.is_empty());

    // Delete the last concept (no one depends on it), one link that does not
    // touch it, and one mastery edge on another concept.
    let gone = format!("{}c0005", o.id_prefix);
    let link = links
        .iter()
        .find(|(a, b)| *a != gone && *b != gone)
        .expect("a link")
        .clone();
    let edge = edges
        .iter()
        .find(|(_, c, _, _)| *c != gone)
        .expect("an edge")
        .clone();
    let producer = cfg.kafka().producer().expect("producer");
    for (topic, key) in [
        (cfg.topic(Topic::Concepts), gone.clone()),
        (
            cfg.topic(Topic::Prerequisites),
            keys::prerequisite_key(&link.0, &link.1),
        ),
        (
            cfg.topic(Topic::Mastery),
            keys::mastery_key(&edge.0, &edge.1),
        ),
    ] {
        producer
            .send(
                FutureRecord::<str, [u8]>::to(&topic).key(&key),
                Duration::from_secs(10),
            )
            .await
            .expect("tombstone");
    }
    common::run_all(&cfg).await;

    let after = store.table_counts().await.expect("counts");
    assert_eq!(after.concepts, 5);
    let ids = graph.concept_ids(&o.id_prefix).await.expect("ids");
    assert_eq!(ids.len(), 5);
    assert!(!ids.contains(&gone));
    let links_after = graph.prerequisite_links(&o.id_prefix).await.expect("links");
    assert!(!links_after.contains(&link));
    assert!(links_after.iter().all(|(a, b)| *a != gone && *b != gone));
    let removed_with_concept = links
        .iter()
        .filter(|(a, b)| *a == gone || *b == gone)
        .count();
    assert_eq!(links_after.len(), links.len() - 1 - removed_with_concept);
    assert_eq!(
        after.concept_prerequisites as usize,
        links_after.len(),
        "postgres mirrors the graph"
    );
    let edges_after = graph.mastery_edges(&o.id_prefix).await.expect("edges");
    assert!(!edges_after
        .iter()
        .any(|(u, c, _, _)| (u, c) == (&edge.0, &edge.1)));
    assert!(edges_after.iter().all(|(_, c, _, _)| *c != gone));
    let removed = edges
        .iter()
        .filter(|(u, c, _, _)| *c == gone || (u, c) == (&edge.0, &edge.1))
        .count();
    assert_eq!(edges_after.len(), edges.len() - removed);
}
