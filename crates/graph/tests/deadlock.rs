//! A write that Neo4j aborts as a deadlock's victim is run again, against
//! the real server. CI once saw `reconcile` fail with
//! `Neo.TransientError.Transaction.DeadlockDetected` while the graph sink
//! wrote the same edges; the official drivers retry such transactions, and
//! so must we.
//!
//! The deadlock is built on purpose: another transaction (`other`) holds
//! the lock of edge B and of many user nodes; the write locks concept A,
//! then reaches B and waits for `other`; `other` then asks for A. Neo4j
//! aborts one of the two, by its default the one holding fewer locks: the
//! write. `other` then gets A, and the write must still end committed.

use std::time::{Duration, Instant};

use neo4rs::{query, Graph};
use novyra_core::{ConceptUpserted, MasteryUpdated};
use novyra_graph::{GraphBatch, GraphError, GraphStore};

fn env(k: &str, d: &str) -> String {
    std::env::var(k).unwrap_or_else(|_| d.to_owned())
}

fn password() -> String {
    std::env::var("NEO4J_PASSWORD").expect("NEO4J_PASSWORD (run via `make test`)")
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

fn concept(id: &str, name: &str) -> ConceptUpserted {
    ConceptUpserted {
        concept_id: id.into(),
        name: name.into(),
        domain: "deadlock".into(),
        difficulty: 0.5,
        bkt_p_init: None,
        bkt_p_transit: None,
        bkt_p_slip: None,
        bkt_p_guess: None,
        updated_at: 1,
    }
}

/// Waits until the server runs the write's mastery statement, i.e. the
/// write has locked concept A (its earlier statement) and not committed.
async fn wait_for_mastery_statement(raw: &Graph) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut rows = raw
            .execute(query(
                "SHOW TRANSACTIONS YIELD currentQuery \
                 WHERE currentQuery STARTS WITH 'UNWIND $rows AS g MERGE (c:Concept' \
                 RETURN count(*) AS n",
            ))
            .await
            .expect("show transactions");
        let n: i64 = rows
            .next()
            .await
            .expect("row")
            .expect("one row")
            .get("n")
            .expect("n");
        if n > 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the write never started its mastery statement"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_aborted_as_a_deadlock_victim_is_run_again() {
    let (uri, user, pw) = (
        env("NEO4J_URI", "127.0.0.1:7687"),
        env("NEO4J_USER", "neo4j"),
        password(),
    );
    let g = GraphStore::new(&uri, &user, &pw).expect("graph");
    g.ensure_schema().await.expect("schema");
    let raw = Graph::new(&uri, &user, &pw).expect("raw client");
    let p = format!("dl{}-", std::process::id());

    // Neo4j picks the victim by its own rule; when it aborts `other`
    // instead, try again with `other` holding more locks.
    for (round, held) in [1_000usize, 10_000].into_iter().enumerate() {
        let (a, c) = (format!("{p}{round}-a"), format!("{p}{round}-c"));
        let b_user = format!("{p}{round}-b");
        let mut setup = GraphBatch::default();
        setup.concept(concept(&a, "before"));
        setup.mastery(update(&b_user, &c, 1));
        for i in 0..held {
            setup.mastery(update(&format!("{p}{round}-u{i:06}"), &c, 1));
        }
        g.write(&setup).await.expect("setup");

        // `other` holds B and `held` user nodes.
        let mut other = raw.start_txn().await.expect("other txn");
        other
            .run(
                query(
                    "MATCH (:User {id: $u})-[r:MASTERED_BY]->(:Concept {id: $c}) SET r.score = -1.0",
                )
                .param("u", b_user.as_str())
                .param("c", c.as_str()),
            )
            .await
            .expect("other locks B");
        other
            .run(
                query("MATCH (u:User) WHERE u.id STARTS WITH $p SET u.touched = true")
                    .param("p", format!("{p}{round}-u")),
            )
            .await
            .expect("other locks users");

        // The write locks A (its first statement), then waits for B.
        let mut w = GraphBatch::default();
        w.concept(concept(&a, "written"));
        w.mastery(update(&b_user, &c, 2));
        let writer = {
            let (g, w) = (g.clone(), w.clone());
            tokio::spawn(async move { g.write(&w).await })
        };
        wait_for_mastery_statement(&raw).await;
        tokio::time::sleep(Duration::from_millis(300)).await;

        // `other` asks for A, which the write holds while it waits for B.
        let asked = other
            .run(query("MATCH (c:Concept {id: $a}) SET c.name = 'other'").param("a", a.as_str()))
            .await;
        match asked {
            Ok(_) => {
                // The write was aborted (nothing else frees A while it waits
                // for B); `other` commits, and the write must run again.
                other.commit().await.expect("other commits");
                writer
                    .await
                    .expect("join")
                    .expect("a write aborted by a deadlock is run again and commits");
                let edges = g.mastery_edges(&b_user).await.expect("edges");
                assert_eq!(
                    edges,
                    vec![(b_user.clone(), c.clone(), 0.2, 2)],
                    "edge B at the write's version"
                );
                let names: Vec<Option<String>> = g
                    .concept_nodes(&a)
                    .await
                    .expect("concepts")
                    .into_iter()
                    .map(|n| n.name)
                    .collect();
                assert_eq!(
                    names,
                    vec![Some("written".to_owned())],
                    "concept A rewritten after `other`"
                );
                return;
            }
            Err(e) => {
                let e = GraphError::from(e);
                assert!(e.is_transient(), "`other` was the victim: {e}");
                let _ = other.rollback().await;
                writer
                    .await
                    .expect("join")
                    .expect("the write, not the victim");
                println!("round {round}: Neo4j aborted the other transaction");
            }
        }
    }
    panic!("Neo4j never chose the write as the deadlock's victim");
}
