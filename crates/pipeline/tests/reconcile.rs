//! Drift injection: after a pipeline run, break the graph in every way
//! reconciliation knows (and make Postgres newer than the mastery topic),
//! then reconcile: the report counts exactly what was injected, the graph
//! ends equal to what the topics and Postgres say, and a second run finds
//! nothing.

mod common;

use neo4rs::query;
use novyra_pipeline::loadgen::{self, LoadgenOptions};
use novyra_pipeline::reconcile::{reconcile, ReconcileOptions, Report};

async fn exec(g: &neo4rs::Graph, q: neo4rs::Query) -> i64 {
    let mut rows = g.execute(q).await.expect("cypher");
    let mut n = 0;
    while let Some(r) = rows.next().await.expect("row") {
        n = r.get::<i64>("n").unwrap_or(0);
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_repairs_exactly_the_injected_drift() {
    let mut cfg = common::config("recon");
    // Small spill buckets (about ten here), so the diff runs bucket by
    // bucket as it does on a large graph.
    cfg.pipeline.reconcile_bucket_rows = 40;
    common::setup(&cfg).await;
    let p = format!("{}-", cfg.topic_prefix.trim_end_matches('.'));
    let o = LoadgenOptions {
        concepts: 12,
        domains: 3,
        students: 30,
        attempts: 1_500,
        seed: 21,
        rate: 0,
        days: 40,
        id_prefix: p.clone(),
    };
    loadgen::generate_and_publish(&cfg, &o, true)
        .await
        .expect("publish");
    common::run_all(&cfg).await;

    let graph = cfg.graph().expect("graph");
    let opts = ReconcileOptions {
        dry_run: false,
        id_prefix: p.clone(),
        force: false,
    };
    let clean = reconcile(&cfg, &opts).await.expect("reconcile");
    assert_eq!(
        clean.drift(),
        0,
        "a fresh pipeline run has no drift: {clean:?}"
    );
    let concepts_before = graph.concept_ids(&p).await.expect("concepts");
    let links_before = graph.prerequisite_links(&p).await.expect("links");

    // Inject drift straight into Neo4j.
    let neo =
        neo4rs::Graph::new(&cfg.neo4j.uri, &cfg.neo4j.user, &cfg.neo4j.password).expect("neo4j");
    // A concept with links and mastery edges disappears.
    let victim = links_before[0].1.clone();
    let victim_links = links_before
        .iter()
        .filter(|(a, b)| *a == victim || *b == victim)
        .count() as u64;
    let victim_edges = exec(
        &neo,
        query("MATCH (:User)-[r:MASTERED_BY]->(:Concept {id: $c}) RETURN count(r) AS n")
            .param("c", victim.as_str()),
    )
    .await as u64;
    exec(
        &neo,
        query("MATCH (c:Concept {id: $c}) DETACH DELETE c RETURN 1 AS n")
            .param("c", victim.as_str()),
    )
    .await;
    // Five edges deleted, four scores corrupted, one concept renamed.
    let deleted = exec(
        &neo,
        query(
            "MATCH (u:User)-[r:MASTERED_BY]->(c:Concept) WHERE u.id STARTS WITH $p \
             WITH r ORDER BY u.id, c.id LIMIT 5 DELETE r RETURN count(*) AS n",
        )
        .param("p", p.as_str()),
    )
    .await;
    assert_eq!(deleted, 5);
    let corrupted = exec(
        &neo,
        query(
            "MATCH (u:User)-[r:MASTERED_BY]->(c:Concept) WHERE u.id STARTS WITH $p \
             WITH r ORDER BY u.id DESC, c.id LIMIT 4 SET r.score = -1.0 RETURN count(*) AS n",
        )
        .param("p", p.as_str()),
    )
    .await;
    assert_eq!(corrupted, 4);
    let renamed = concepts_before
        .iter()
        .find(|c| **c != victim)
        .expect("another concept")
        .clone();
    exec(
        &neo,
        query("MATCH (c:Concept {id: $c}) SET c.name = 'wrong' RETURN 1 AS n")
            .param("c", renamed.as_str()),
    )
    .await;
    // A concept the sink has moved past the snapshot (a later event): left
    // alone, counted as newer in the graph.
    let ahead = concepts_before
        .iter()
        .find(|c| **c != victim && **c != renamed)
        .expect("a third concept")
        .clone();
    exec(
        &neo,
        query(
            "MATCH (c:Concept {id: $c}) SET c.name = 'from a later event', \
             c.updatedAt = c.updatedAt + 1000000 RETURN 1 AS n",
        )
        .param("c", ahead.as_str()),
    )
    .await;
    // Strays: three concepts, two links, two mastery edges.
    exec(
        &neo,
        query(
            "UNWIND range(1, 3) AS i CREATE (:Concept {id: $p + 'stray-' + i, name: 'stray', \
             domain: 'nowhere', difficulty: 0.5}) RETURN count(*) AS n",
        )
        .param("p", p.as_str()),
    )
    .await;
    let unlinked: Vec<(String, String)> = concepts_before
        .iter()
        .filter(|c| **c != victim)
        .flat_map(|a| concepts_before.iter().map(move |b| (a.clone(), b.clone())))
        .filter(|(a, b)| a != b && *b != victim && !links_before.contains(&(a.clone(), b.clone())))
        .filter(|(a, b)| !links_before.contains(&(b.clone(), a.clone())))
        .take(2)
        .collect();
    for (a, b) in &unlinked {
        exec(
            &neo,
            query(
                "MATCH (a:Concept {id: $a}), (b:Concept {id: $b}) \
                 CREATE (a)-[:PREREQUISITE_OF]->(b) RETURN 1 AS n",
            )
            .param("a", a.as_str())
            .param("b", b.as_str()),
        )
        .await;
    }
    exec(
        &neo,
        query(
            "MATCH (c:Concept) WHERE c.id STARTS WITH $p AND c.id <> $victim \
             AND NOT (:User {id: $p + 'nobody'})-[:MASTERED_BY]->(c) \
             WITH c ORDER BY c.id LIMIT 2 \
             MERGE (u:User {id: $p + 'nobody'}) \
             CREATE (u)-[:MASTERED_BY {score: 0.99, version: 1, updatedAt: 0}]->(c) RETURN count(*) AS n",
        )
        .param("p", p.as_str())
        .param("victim", victim.as_str()),
    )
    .await;
    // Postgres newer than the topic: one mastery row moves ahead.
    let store = novyra_store::Store::new(&cfg.store()).expect("store");
    let rows = store.mastery_rows().await.expect("rows");
    let bumped = rows
        .iter()
        .find(|r| r.concept_id != victim)
        .expect("a row")
        .clone();
    {
        use diesel_async::RunQueryDsl;
        let mut c = store.session().await.expect("conn");
        diesel::sql_query(
            "UPDATE mastery_records SET version = version + 1, mastery = 0.5 \
             WHERE user_id = $1 AND concept_id = $2",
        )
        .bind::<diesel::sql_types::Text, _>(&bumped.user_id)
        .bind::<diesel::sql_types::Text, _>(&bumped.concept_id)
        .execute(&mut c)
        .await
        .expect("bump");
    }

    let expected = Report {
        missing_concept: 1,
        extra_concept: 3,
        stale_concept: 1,
        missing_link: victim_links,
        extra_link: 2,
        missing_mastery: victim_edges + 5,
        extra_mastery: 2,
        stale_mastery: 4,
        newer_in_graph: 1,
        republished: 1,
        records_read: 0,
        graph_size: 0,
        // The strays: no links or edges of their own.
        would_delete: 3 + 2 + 2,
        refused: false,
        repaired: false,
    };
    let dry = reconcile(
        &cfg,
        &ReconcileOptions {
            dry_run: true,
            id_prefix: p.clone(),
            force: false,
        },
    )
    .await
    .expect("dry run");
    assert_eq!(
        Report {
            records_read: 0,
            graph_size: 0,
            ..dry.clone()
        },
        expected,
        "the dry run counts exactly the injected drift"
    );
    let fixed = reconcile(&cfg, &opts).await.expect("reconcile");
    assert_eq!(
        Report {
            records_read: 0,
            graph_size: 0,
            repaired: false,
            ..fixed
        },
        expected,
        "a dry run writes nothing: the real run finds the same drift"
    );

    // The republished row reaches the graph through the graph sink.
    common::run_all(&cfg).await;
    assert_eq!(
        graph.concept_ids(&p).await.expect("concepts"),
        concepts_before
    );
    assert_eq!(
        graph.prerequisite_links(&p).await.expect("links"),
        links_before
    );
    let kept = graph
        .concept_nodes(&p)
        .await
        .expect("nodes")
        .into_iter()
        .find(|n| n.id == ahead)
        .expect("the concept ahead");
    assert_eq!(
        kept.name.as_deref(),
        Some("from a later event"),
        "a repair never rolls a newer concept back"
    );
    let mastery = store.mastery_rows().await.expect("rows");
    let edges = graph.mastery_edges(&p).await.expect("edges");
    assert_eq!(edges.len(), mastery.len());
    for ((u, c, score, version), m) in edges.iter().zip(&mastery) {
        assert_eq!((u, c), (&m.user_id, &m.concept_id));
        assert_eq!(score.to_bits(), m.mastery.to_bits(), "{u}/{c}");
        assert_eq!(*version, m.version, "{u}/{c}");
    }
    let again = reconcile(&cfg, &opts).await.expect("reconcile again");
    assert_eq!(again.drift(), 0, "a second run finds nothing: {again:?}");
}
