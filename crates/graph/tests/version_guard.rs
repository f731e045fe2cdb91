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

/// A plain driver connection, for a transaction held open by the test
/// itself (the other writer in the race tests).
fn raw() -> neo4rs::Graph {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    neo4rs::Graph::new(
        env("NEO4J_URI", "127.0.0.1:7687"),
        env("NEO4J_USER", "neo4j"),
        std::env::var("NEO4J_PASSWORD").expect("NEO4J_PASSWORD (run via `make test`)"),
    )
    .expect("raw connection")
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

/// A guarded write that meets an edge another transaction is replacing
/// with a newer version waits for it, and then leaves the newer edge
/// alone. Neo4j reads committed data without locks, so a guard that read
/// the version before locking passed on the old version and overwrote the
/// newer edge once the lock was free (found by the chaos test: reconcile's
/// repair of version 9 landed after the sink's version 10). The open
/// transaction here stands for the other writer; the waiting writes are
/// the sink's and reconcile's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guarded_write_waiting_on_a_newer_edge_leaves_it_alone() {
    let g = graph();
    g.ensure_schema().await.expect("schema");
    let raw = raw();
    let p = format!("vgl{}-", std::process::id());
    for writer in ["sink", "repair"] {
        let (user, concept) = (format!("{p}{writer}-u"), format!("{p}{writer}-c"));
        let mut b = GraphBatch::default();
        b.mastery(update(&user, &concept, 8));
        g.write(&b).await.expect("version 8");

        // The other writer: version 10, not committed yet (it holds the lock).
        let mut newer = raw.start_txn().await.expect("begin");
        newer
            .run(
                neo4rs::query(
                    "MATCH (:User {id: $u})-[r:MASTERED_BY]->(:Concept {id: $c}) \
                     SET r.version = 10, r.score = 1.0, r.updatedAt = 10000",
                )
                .param("u", user.as_str())
                .param("c", concept.as_str()),
            )
            .await
            .expect("hold version 10");

        let late = update(&user, &concept, 9);
        let waiting = {
            let g = graph();
            let late = late.clone();
            tokio::spawn(async move {
                if writer == "sink" {
                    let mut b = GraphBatch::default();
                    b.mastery(late);
                    g.write(&b).await
                } else {
                    g.repair_mastery(&[(
                        late.user_id,
                        late.concept_id,
                        late.mastery,
                        late.version,
                        late.updated_at,
                    )])
                    .await
                }
            })
        };
        // Long enough for the waiting write to read and block on the lock.
        tokio::time::sleep(std::time::Duration::from_millis(800)).await;
        newer.commit().await.expect("commit version 10");
        waiting.await.expect("join").expect("late write");

        let edges = g
            .mastery_edges(&format!("{p}{writer}-"))
            .await
            .expect("edges");
        assert_eq!(
            edges,
            vec![(user.clone(), concept.clone(), 1.0, 10)],
            "the {writer}'s late version 9 overwrote version 10"
        );
    }
}

/// The same race for reconcile's concept repair: an older repair waiting
/// on a concept another transaction is updating leaves the newer concept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_concept_repair_waiting_on_a_newer_concept_leaves_it_alone() {
    let g = graph();
    g.ensure_schema().await.expect("schema");
    let raw = raw();
    let p = format!("vglc{}-", std::process::id());
    let id = format!("{p}c");
    let mut b = GraphBatch::default();
    b.concept(concept(&id, "first", 1_000));
    g.write(&b).await.expect("first");

    let mut newer = raw.start_txn().await.expect("begin");
    newer
        .run(
            neo4rs::query("MATCH (c:Concept {id: $id}) SET c.name = 'newer', c.updatedAt = 3000")
                .param("id", id.as_str()),
        )
        .await
        .expect("hold the newer concept");
    let waiting = {
        let g = graph();
        let older = concept(&id, "older", 2_000);
        tokio::spawn(async move { g.repair_concepts(&[older]).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    newer.commit().await.expect("commit");
    waiting.await.expect("join").expect("repair");

    let nodes: Vec<_> = g
        .concept_nodes(&p)
        .await
        .expect("nodes")
        .into_iter()
        .map(|n| (n.id, n.name, n.updated_at))
        .collect();
    assert_eq!(nodes, vec![(id, Some("newer".into()), Some(3_000))]);
}
