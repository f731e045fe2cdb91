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

fn concept(id: &str, name: &str, updated_at: i64) -> novyra_core::ConceptUpserted {
    novyra_core::ConceptUpserted {
        concept_id: id.into(),
        name: name.into(),
        domain: "d".into(),
        difficulty: 0.5,
        bkt_p_init: None,
        bkt_p_transit: None,
        bkt_p_slip: None,
        bkt_p_guess: None,
        updated_at,
    }
}

/// Reconcile repairs concepts from a snapshot the sink may have moved past
/// meanwhile: its write must not roll a newer concept back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concept_repair_never_rolls_a_newer_concept_back() {
    let g = graph();
    g.ensure_schema().await.expect("schema");
    let p = format!("vgc{}-", std::process::id());
    let (id, placeholder) = (format!("{p}c"), format!("{p}early"));
    let names = |g: &GraphStore| {
        let g = g.clone();
        let p = p.clone();
        async move {
            g.concept_nodes(&p)
                .await
                .expect("nodes")
                .into_iter()
                .map(|n| (n.id, n.name, n.updated_at))
                .collect::<Vec<_>>()
        }
    };

    // The sink wrote the concept at time 2,000.
    let mut b = GraphBatch::default();
    b.concept(concept(&id, "new", 2_000));
    // A mastery edge made a placeholder for a concept not yet arrived.
    b.mastery(update(&format!("{p}u"), &placeholder, 1));
    g.write(&b).await.expect("write");

    // An older repair changes nothing; one of the same time overwrites a
    // corrupted node; a placeholder is filled in.
    g.repair_concepts(&[concept(&id, "old", 1_000)])
        .await
        .expect("repair");
    assert_eq!(
        names(&g).await,
        vec![
            (id.clone(), Some("new".into()), Some(2_000)),
            (placeholder.clone(), None, None)
        ]
    );
    g.repair_concepts(&[
        concept(&id, "fixed", 2_000),
        concept(&placeholder, "arrived", 500),
    ])
    .await
    .expect("repair");
    assert_eq!(
        names(&g).await,
        vec![
            (id, Some("fixed".into()), Some(2_000)),
            (placeholder, Some("arrived".into()), Some(500))
        ]
    );
    g.delete_prefixed(&p).await.expect("cleanup");
}
