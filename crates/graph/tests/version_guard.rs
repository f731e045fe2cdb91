//! Out-of-order and duplicate mastery deliveries against the real Neo4j:
//! whatever the order, across batches and inside one, the edge ends at the
//! highest version with that version's score and event time.

use novyra_core::MasteryUpdated;
use novyra_graph::{GraphBatch, GraphStore};

fn graph() -> GraphStore {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    GraphStore::new(
        &env("NEO4J_URI", "127.0.0.1:7687"),
        &env("NEO4J_USER", "neo4j"),
        &std::env::var("NEO4J_PASSWORD").expect("NEO4J_PASSWORD (run via `make test`)"),
    )
    .expect("graph")
}

fn update(user: &str, concept: &str, version: i64) -> MasteryUpdated {
    MasteryUpdated {
        user_id: user.into(),
        concept_id: concept.into(),
        mastery: version as f64 / 10.0,
        version,
        attempts_total: version,
        attempts_correct: version,
        confidence_weight: version as f64,
        last_event_id: format!("e{version}"),
        updated_at: 1_000 * version,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mastery_edge_ends_at_the_highest_version_whatever_the_order() {
    let g = graph();
    g.ensure_schema().await.expect("schema");
    let p = format!("vg{}-", std::process::id());
    let (user, concept) = (format!("{p}u"), format!("{p}c"));

    // Across batches: 2, 5, 3, 5 again (redelivery), 1.
    for v in [2, 5, 3, 5, 1] {
        let mut b = GraphBatch::default();
        b.mastery(update(&user, &concept, v));
        g.write(&b).await.expect("write");
    }
    let edges = g.mastery_edges(&p).await.expect("edges");
    assert_eq!(edges, vec![(user.clone(), concept.clone(), 0.5, 5)]);

    // Inside one batch, the newest wins before anything is written.
    let other = format!("{p}c2");
    let mut b = GraphBatch::default();
    for v in [7, 9, 8, 9, 4] {
        b.mastery(update(&user, &other, v));
    }
    g.write(&b).await.expect("write");
    // And a stale redelivery after it changes nothing.
    let mut b = GraphBatch::default();
    b.mastery(update(&user, &other, 6));
    g.write(&b).await.expect("write");
    let edges = g.mastery_edges(&p).await.expect("edges");
    assert_eq!(
        edges,
        vec![
            (user.clone(), concept.clone(), 0.5, 5),
            (user.clone(), other.clone(), 0.9, 9)
        ]
    );
}
