//! Mastery is a pure function of (the attempt log, the current catalogue),
//! whatever order concepts and attempts arrive in: attempts published before
//! their concept are scored with the defaults, then recomputed with the
//! concept's parameters when it arrives, and again after a parameter change
//! that comes in the middle of more attempts. Each time `mastery_records`
//! equals an independent BKT replay with the final parameters, the mastery
//! topic and Neo4j follow, and `novyra replay --verify` (which applies the
//! catalogue first) agrees.

mod common;

use std::collections::HashMap;

use common::*;
use novyra_core::Topic;
use novyra_core::{BktParams, ConceptAttempted, ConceptUpserted};
use novyra_pipeline::loadgen::{self, LoadgenOptions};
use novyra_registry::{Codec, EventKind};

/// Every law the test holds the pipeline to, after it went idle.
async fn assert_follows_catalogue(env: &Env, what: &str) -> usize {
    let store = novyra_store::Store::new(&env.cfg.store()).expect("store");
    assert_eq!(
        store.recompute_pending().await.expect("queue"),
        0,
        "{what}: recomputation finished"
    );
    let current = store.catalogue_params().await.expect("catalogue");
    let (n, bad, finals) = novyra_pipeline::summary::recompute(
        &store.attempts_in_applied_order().await.expect("audit"),
        &current,
    );
    assert_eq!(bad, 0, "{what}: every audit row is one BKT step");
    let rows = store.mastery_rows().await.expect("rows");
    assert_eq!(rows.len(), finals.len(), "{what}: one row per pair");
    let wrong: Vec<_> = rows
        .iter()
        .filter(|r| {
            finals[&(r.user_id.clone(), r.concept_id.clone())].to_bits() != r.mastery.to_bits()
        })
        .map(|r| (&r.user_id, &r.concept_id))
        .collect();
    assert!(
        wrong.is_empty(),
        "{what}: {} of {} rows differ from a replay with the current parameters, e.g. {:?}",
        wrong.len(),
        rows.len(),
        wrong.first()
    );
    let table = mastery_table(&env.cfg).await;
    assert_same_mastery(
        &format!("{what}: the mastery topic follows the table"),
        &table,
        &mastery_topic(&env.cfg).await,
    );
    let edges: HashMap<(String, String), (u64, i64)> = env
        .cfg
        .graph()
        .expect("graph")
        .mastery_edges(&format!("{}-", env.name))
        .await
        .expect("edges")
        .into_iter()
        .map(|(u, c, s, v)| ((u, c), (s.to_bits(), v)))
        .collect();
    assert_eq!(edges.len(), rows.len(), "{what}: one edge per row");
    for r in &rows {
        assert_eq!(
            edges.get(&(r.user_id.clone(), r.concept_id.clone())),
            Some(&(r.mastery.to_bits(), r.version)),
            "{what}: the edge of {}/{} follows the row",
            r.user_id,
            r.concept_id
        );
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mastery_follows_concepts_that_arrive_after_their_attempts() {
    let env = Env::new("late").await;
    let o = |n: usize, seed: u64| LoadgenOptions {
        concepts: 6,
        domains: 2,
        students: 40,
        attempts: n,
        seed,
        rate: 0,
        days: 20,
        id_prefix: format!("{}-", env.name),
    };
    let now = chrono::Utc::now().timestamp_millis();
    let curriculum = loadgen::curriculum(&o(0, 1), now);
    let codec = Codec::new(&env.cfg.registry()).expect("codec");
    let producer = env.cfg.kafka().producer().expect("producer");
    let attempts = |n: usize, seed: u64| {
        loadgen::attempts(&o(n, seed), &curriculum, now)
            .into_iter()
            .map(|a| (a.user_id.clone(), a))
            .collect::<Vec<(String, ConceptAttempted)>>()
    };
    let publish_attempts = |items: Vec<(String, ConceptAttempted)>| {
        let (codec, producer, topic) = (&codec, &producer, env.cfg.topic(Topic::Attempts));
        async move {
            loadgen::publish(codec, producer, &topic, EventKind::Attempt, &items, 0, true)
                .await
                .expect("publish attempts")
        }
    };
    let publish_concepts = |items: Vec<ConceptUpserted>| {
        let (codec, producer, topic) = (&codec, &producer, env.cfg.topic(Topic::Concepts));
        async move {
            let items: Vec<(String, ConceptUpserted)> = items
                .into_iter()
                .map(|c| (c.concept_id.clone(), c))
                .collect();
            loadgen::publish(codec, producer, &topic, EventKind::Concept, &items, 0, true)
                .await
                .expect("publish concepts")
        }
    };

    // 1. Attempts for concepts nobody has published yet: the defaults.
    publish_attempts(attempts(600, 2)).await;
    run_until_idle(&env.cfg);
    let store = novyra_store::Store::new(&env.cfg.store()).expect("store");
    assert!(store
        .catalogue_params()
        .await
        .expect("catalogue")
        .is_empty());
    assert_eq!(assert_follows_catalogue(&env, "defaults").await, 600);
    let before = mastery_table(&env.cfg).await;

    // 2. The concepts arrive (their difficulty gives other parameters):
    // every row is recomputed, with a version above the attempts it counts.
    for c in &curriculum.concepts {
        assert_ne!(BktParams::for_concept(c), BktParams::default());
    }
    publish_concepts(curriculum.concepts.clone()).await;
    run_until_idle(&env.cfg);
    assert_follows_catalogue(&env, "concepts arrived").await;
    let after = mastery_table(&env.cfg).await;
    assert_eq!(after.len(), before.len());
    for (b, a) in before.iter().zip(&after) {
        assert_ne!(
            a.mastery_bits, b.mastery_bits,
            "{}/{}",
            a.user_id, a.concept_id
        );
        assert_eq!(a.attempts_total, b.attempts_total);
        assert_eq!(a.version, b.version + 1, "one recomputation");
    }

    // 3. A parameter change lands in the middle of more attempts.
    let mut retuned = curriculum.concepts[..2].to_vec();
    for c in &mut retuned {
        c.bkt_p_init = Some(0.42);
        c.bkt_p_slip = Some(0.2);
        c.updated_at += 1;
    }
    let more = attempts(1_200, 3);
    let (first, second) = more.split_at(600);
    publish_attempts(first.to_vec()).await;
    publish_concepts(retuned.clone()).await;
    publish_attempts(second.to_vec()).await;
    run_until_idle(&env.cfg);
    assert_eq!(
        assert_follows_catalogue(&env, "parameters changed").await,
        1_800
    );
    let current = store.catalogue_params().await.expect("catalogue");
    assert_eq!(current[&retuned[0].concept_id].p_init, 0.42);
    assert_audit_consistent(&env.cfg, 1_800).await;

    // 4. A replay applies the catalogue first, so it never recomputes; it
    // must still hold the same values.
    let (code, out) = novyra(
        &env.cfg,
        &["replay", "--schema", &format!("{}_r", env.name), "--verify"],
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("verify: identical"), "{out}");

    // 5. And reconciliation finds the graph in line.
    let (code, out) = novyra(
        &env.cfg,
        &[
            "reconcile",
            "--dry-run",
            "--json",
            "--id-prefix",
            &format!("{}-", env.name),
        ],
    );
    assert_eq!(code, 0, "{out}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    for kind in ["missing_mastery", "stale_mastery", "republished"] {
        assert_eq!(report[kind], 0, "{kind}: {out}");
    }
}
