//! The learner queries on a known prerequisite DAG in the real Neo4j, with
//! answers worked out by hand:
//!
//! ```text
//! a ──▶ b ──▶ d ──▶ e        x (no prerequisites)
//! └───▶ c ──┘
//! ```
//! The student has mastered a (0.97), is weak at b (0.5) and d (0.2), and
//! has not attempted c, e or x. Mastered means score ≥ 0.95.

use novyra_core::{ConceptUpserted, MasteryUpdated, PrerequisiteLinked};
use novyra_graph::{GraphBatch, GraphStore};

const THRESHOLD: f64 = 0.95;

fn graph() -> GraphStore {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    GraphStore::new(
        &env("NEO4J_URI", "127.0.0.1:7687"),
        &env("NEO4J_USER", "neo4j"),
        &std::env::var("NEO4J_PASSWORD").expect("NEO4J_PASSWORD (run via `make test`)"),
    )
    .expect("graph")
}

async fn known_dag(g: &GraphStore, p: &str) -> String {
    g.ensure_schema().await.expect("schema");
    let mut b = GraphBatch::default();
    for (id, difficulty) in [
        ("a", 0.2),
        ("b", 0.4),
        ("c", 0.4),
        ("d", 0.6),
        ("e", 0.8),
        ("x", 0.3),
    ] {
        b.concept(ConceptUpserted {
            concept_id: format!("{p}{id}"),
            name: format!("concept {id}"),
            domain: format!("{p}dom"),
            difficulty,
            bkt_p_init: None,
            bkt_p_transit: None,
            bkt_p_slip: None,
            bkt_p_guess: None,
            updated_at: 1,
        });
    }
    for (pre, con) in [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("d", "e")] {
        b.link(PrerequisiteLinked {
            prerequisite_id: format!("{p}{pre}"),
            concept_id: format!("{p}{con}"),
            linked_at: 1,
        });
    }
    let user = format!("{p}student");
    for (c, score) in [("a", 0.97), ("b", 0.5), ("d", 0.2)] {
        b.mastery(MasteryUpdated {
            user_id: user.clone(),
            concept_id: format!("{p}{c}"),
            mastery: score,
            version: 3,
            attempts_total: 3,
            attempts_correct: 2,
            confidence_weight: 3.0,
            last_event_id: "e".into(),
            updated_at: 1,
        });
    }
    g.write(&b).await.expect("write the DAG");
    user
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_queries_answer_as_worked_out_on_a_known_dag() {
    let g = graph();
    let p = format!("lq{}-", std::process::id());
    let user = known_dag(&g, &p).await;
    let ours = |ids: Vec<String>| -> Vec<String> {
        ids.into_iter()
            .filter_map(|i| i.strip_prefix(&p).map(str::to_owned))
            .collect()
    };

    // Next: prerequisites all mastered, itself not: b and c (after a), x.
    let next = g
        .next_concepts(&user, THRESHOLD, 100_000)
        .await
        .expect("next");
    assert_eq!(
        ours(next.into_iter().map(|c| c.id).collect()),
        ["b", "c", "x"]
    );

    // Path to e: its closure minus mastered a, prerequisites first.
    let path = g
        .learning_path(&user, &format!("{p}e"), THRESHOLD, 8)
        .await
        .expect("path");
    let got: Vec<(String, i64)> = path
        .iter()
        .map(|s| (s.id.trim_start_matches(&p).to_owned(), s.hops))
        .collect();
    assert_eq!(
        got,
        [
            ("b".into(), 2),
            ("c".into(), 2),
            ("d".into(), 1),
            ("e".into(), 0)
        ]
    );
    assert_eq!(path[0].score, 0.5);
    assert_eq!(path[2].score, 0.2);

    // Bounded to one hop: only d, then e.
    let short = g
        .learning_path(&user, &format!("{p}e"), THRESHOLD, 1)
        .await
        .expect("path");
    assert_eq!(ours(short.into_iter().map(|s| s.id).collect()), ["d", "e"]);

    // Nothing left once the target is mastered and so are its prerequisites:
    // a path to a (mastered, no prerequisites) is empty.
    let none = g
        .learning_path(&user, &format!("{p}a"), THRESHOLD, 8)
        .await
        .expect("path");
    assert!(none.is_empty(), "{none:?}");

    // Weak: b blocks d, which the student attempted; d blocks e (not attempted).
    let weak = g.weak_concepts(&user, THRESHOLD, 10).await.expect("weak");
    let got: Vec<(String, i64, i64)> = weak
        .iter()
        .map(|w| {
            (
                w.id.trim_start_matches(&p).to_owned(),
                w.dependents,
                w.attempted_dependents,
            )
        })
        .collect();
    assert_eq!(got, [("b".into(), 1, 1), ("d".into(), 1, 0)]);
}
