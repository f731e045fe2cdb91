//! A job that cannot see the whole truth does nothing: with the registry,
//! Postgres or Kafka stopped, `novyra reconcile` (dry run or not) exits
//! non-zero and writes nothing to Neo4j or the mastery topic, although there
//! is drift it would repair. With everything up it repairs exactly that
//! drift; and a run that would delete more than the configured share of the
//! graph is refused (exit 3, nothing deleted) unless `--force`.
//!
//! NB: this test stops and restarts services of the shared local stack, so
//! it lives in its own test binary (cargo runs test binaries one at a time).

mod common;

use std::time::{Duration, Instant};

use common::*;
use neo4rs::query;
use novyra_core::Topic;
use novyra_pipeline::loadgen::{self, LoadgenOptions};

/// Runs `novyra args...`; returns (exit code, stdout, stderr).
fn novyra_full(env: &Env, args: &[&str]) -> (i32, String, String) {
    let out = command(&env.cfg)
        .args(args)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run novyra");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The mastery topic's end offsets, summed. Right after a broker restart
/// the metadata may still name no leader, so this asks again for a while.
fn mastery_end(env: &Env) -> i64 {
    let c: novyra_kafka::rdkafka::consumer::BaseConsumer =
        env.cfg.kafka().reader_config().create().expect("client");
    let started = Instant::now();
    loop {
        match novyra_kafka::lag::watermarks(
            &c,
            &env.cfg.topic(Topic::Mastery),
            Duration::from_secs(30),
        ) {
            Ok(marks) => return marks.iter().map(|(_, _, high)| high).sum(),
            Err(e) if started.elapsed() < Duration::from_secs(60) => {
                println!("end offsets not yet readable: {e}");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => panic!("mastery end offsets: {e}"),
        }
    }
}

async fn edge_count(neo: &neo4rs::Graph, prefix: &str) -> i64 {
    let mut rows = neo
        .execute(
            query(
                "MATCH (u:User)-[r:MASTERED_BY]->(:Concept) WHERE u.id STARTS WITH $p \
                 RETURN count(r) AS n",
            )
            .param("p", prefix),
        )
        .await
        .expect("cypher");
    let row = rows.next().await.expect("row").expect("one row");
    row.get::<i64>("n").expect("n")
}

/// Both forms of reconcile fail while a dependency is down, and leave the
/// graph and the mastery topic as they were.
async fn refuses_while_down(env: &Env, neo: &neo4rs::Graph, dependency: &str) {
    let p = format!("{}-", env.name);
    let edges = edge_count(neo, &p).await;
    for dry in [true, false] {
        let mut args = vec!["reconcile", "--json", "--id-prefix", &p];
        if dry {
            args.push("--dry-run");
        }
        let started = Instant::now();
        let (code, out, err) = novyra_full(env, &args);
        println!(
            "{dependency} down, reconcile{}: exit {code} after {:?}: {}",
            if dry { " --dry-run" } else { "" },
            started.elapsed(),
            err.trim()
        );
        assert_ne!(code, 0, "{dependency} down: reconcile must fail: {out}");
        assert!(out.trim().is_empty(), "no report is printed: {out}");
        assert!(!err.trim().is_empty(), "the error is said");
    }
    assert_eq!(
        edge_count(neo, &p).await,
        edges,
        "{dependency} down: graph untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_writes_nothing_without_the_whole_truth() {
    let env = Env::new("rcout").await;
    let p = format!("{}-", env.name);
    let o = LoadgenOptions {
        concepts: 10,
        domains: 2,
        students: 40,
        attempts: 1_000,
        seed: 8,
        rate: 0,
        days: 20,
        id_prefix: p.clone(),
    };
    loadgen::generate_and_publish(&env.cfg, &o, true)
        .await
        .expect("publish");
    run_until_idle(&env.cfg);
    let neo = neo4rs::Graph::new(
        &env.cfg.neo4j.uri,
        &env.cfg.neo4j.user,
        &env.cfg.neo4j.password,
    )
    .expect("neo4j");
    let full = edge_count(&neo, &p).await;
    assert!(full > 100, "{full} edges");

    // Drift that a reconcile would repair: three edges gone.
    neo.run(
        query(
            "MATCH (u:User)-[r:MASTERED_BY]->(:Concept) WHERE u.id STARTS WITH $p \
             WITH r ORDER BY u.id LIMIT 3 DELETE r",
        )
        .param("p", p.as_str()),
    )
    .await
    .expect("inject drift");
    assert_eq!(edge_count(&neo, &p).await, full - 3);
    let topic_end = mastery_end(&env);

    stack("apicurio.sh", "stop");
    refuses_while_down(&env, &neo, "registry").await;
    stack("apicurio.sh", "start");

    stack("postgres.sh", "stop");
    refuses_while_down(&env, &neo, "postgres").await;
    stack("postgres.sh", "start");
    // NB: Apicurio 3.0.x needs a restart after its Postgres did (see
    // dependency_outage.rs).
    stack("apicurio.sh", "stop");
    stack("apicurio.sh", "start");

    stack("kafka.sh", "stop");
    refuses_while_down(&env, &neo, "kafka").await;
    stack("kafka.sh", "start");
    assert_eq!(mastery_end(&env), topic_end, "nothing republished");

    // Everything up: exactly the injected drift is repaired. Right after
    // the broker restart a partition may still have no leader, and then
    // reconcile rightly refuses (exit 1, nothing written); wait with
    // dry runs, which write nothing, until it sees the whole truth.
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (code, out, err) = novyra_full(
            &env,
            &["reconcile", "--dry-run", "--json", "--id-prefix", &p],
        );
        if code == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "reconcile never saw the whole truth after the restarts: {out} {err}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let (code, out, err) = novyra_full(&env, &["reconcile", "--json", "--id-prefix", &p]);
    assert_eq!(code, 0, "{out} {err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(report["missing_mastery"], 3, "{out}");
    assert_eq!(report["refused"], false, "{out}");
    assert_eq!(edge_count(&neo, &p).await, full);

    // The brake: edges nobody published, 10% of the graph, are not deleted
    // without --force.
    let fake = (full / 10).max(1);
    neo.run(
        query(
            "UNWIND range(1, $n) AS i \
             MATCH (c:Concept) WHERE c.id STARTS WITH $p \
             WITH i, c ORDER BY c.id LIMIT $n \
             MERGE (u:User {id: $p + 'ghost' + toString(i)}) \
             MERGE (u)-[:MASTERED_BY {score: 0.5, version: 1, updatedAt: 0}]->(c)",
        )
        .param("n", fake)
        .param("p", p.as_str()),
    )
    .await
    .expect("ghost edges");
    let with_ghosts = edge_count(&neo, &p).await;
    assert!(with_ghosts > full, "{with_ghosts} > {full}");
    let (code, out, err) = novyra_full(&env, &["reconcile", "--json", "--id-prefix", &p]);
    assert_eq!(code, 3, "refused: {out} {err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(report["refused"], true, "{out}");
    assert_eq!(report["repaired"], false, "{out}");
    assert_eq!(report["extra_mastery"], with_ghosts - full, "{out}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(edge_count(&neo, &p).await, with_ghosts, "nothing deleted");
    let (code, out, err) =
        novyra_full(&env, &["reconcile", "--json", "--force", "--id-prefix", &p]);
    assert_eq!(code, 0, "{out} {err}");
    assert_eq!(edge_count(&neo, &p).await, full, "the ghosts are gone");
}
