//! Disaster recovery with deploy/backup: a backup restored into an empty
//! schema and graph equals the original (row counts and checksums per
//! table, the graph export's checksum), and reconcile then finds zero drift.
//! Then the harder case: work done after the backup is not lost, because
//! the restored ingest offsets make the workers re-read it from Kafka and
//! reconcile repairs the graph from the compacted topics. Prints the
//! measured RPO and RTO (docs/disaster-recovery.md quotes them).

mod common;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

use common::*;
use diesel::sql_types::{BigInt, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use novyra_pipeline::loadgen::{self, LoadgenOptions};
use novyra_pipeline::reconcile::Report;

const TABLES: [&str; 8] = [
    "concepts",
    "concept_prerequisites",
    "concept_attempts",
    "rubric_evaluations",
    "mastery_records",
    "consumer_offsets",
    "attempt_event_ids",
    "mastery_outbox",
];

#[derive(diesel::QueryableByName)]
struct Sum {
    #[diesel(sql_type = BigInt)]
    n: i64,
    #[diesel(sql_type = Text)]
    h: String,
}

async fn owner() -> AsyncPgConnection {
    let url = std::env::var("MIGRATION_DATABASE_URL").expect("MIGRATION_DATABASE_URL");
    AsyncPgConnection::establish(&url).await.expect("connect")
}

/// (rows, md5 of the rows in text form, sorted) per table.
async fn checksums(schema: &str) -> BTreeMap<&'static str, (i64, String)> {
    let mut c = owner().await;
    let mut out = BTreeMap::new();
    for t in TABLES {
        let s: Sum = diesel::sql_query(format!(
            "SELECT count(*)::bigint AS n, md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), '')) AS h \
             FROM {schema}.{t} t"
        ))
        .get_result(&mut c)
        .await
        .expect(t);
        out.insert(t, (s.n, s.h));
    }
    out
}

fn script(name: &str, env: &Env, dir: &std::path::Path) -> (f64, String) {
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/backup/").to_owned() + name)
        .arg(dir)
        .env("NOVYRA", env!("CARGO_BIN_EXE_novyra"))
        .env("NOVYRA_TOPIC_PREFIX", &env.cfg.topic_prefix)
        .env(
            "NOVYRA_DB_SCHEMA",
            env.cfg.database.schema.as_deref().unwrap_or(""),
        )
        .env("NOVYRA_ID_PREFIX", format!("{}-", env.name))
        .env("RUST_LOG", "warn")
        .output()
        .expect("run script");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{name}: {text}");
    (started.elapsed().as_secs_f64(), text)
}

fn graph_sha(env: &Env) -> String {
    let (code, out) = novyra(
        &env.cfg,
        &[
            "graph",
            "export",
            "--out",
            "/dev/null",
            "--id-prefix",
            &format!("{}-", env.name),
        ],
    );
    assert_eq!(code, 0, "{out}");
    out.rsplit("sha256 ").next().expect("sha").trim().to_owned()
}

fn drift(env: &Env, dry_run: bool) -> Report {
    let p = format!("{}-", env.name);
    let mut args = vec!["reconcile", "--json", "--id-prefix", &p];
    if dry_run {
        args.push("--dry-run");
    }
    let (code, out) = novyra(&env.cfg, &args);
    assert_eq!(code, 0, "{out}");
    serde_json::from_str(out.trim()).expect("report")
}

async fn disaster(env: &Env) {
    let schema = env.cfg.database.schema.clone().expect("schema");
    diesel::sql_query(format!("DROP SCHEMA {schema} CASCADE"))
        .execute(&mut owner().await)
        .await
        .expect("drop schema");
    env.cfg
        .graph()
        .expect("graph")
        .delete_prefixed(&format!("{}-", env.name))
        .await
        .expect("wipe graph");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_restores_exactly_and_loses_nothing_after_it() {
    let env = Env::new("bkp").await;
    let schema = env.cfg.database.schema.clone().expect("schema");
    let o = |n: usize, seed: u64| LoadgenOptions {
        concepts: 12,
        domains: 3,
        students: 80,
        attempts: n,
        seed,
        rate: 0,
        days: 30,
        id_prefix: format!("{}-", env.name),
    };
    loadgen::generate_and_publish(&env.cfg, &o(4_000, 1), true)
        .await
        .expect("publish");
    run_until_idle(&env.cfg);
    let before = checksums(&schema).await;
    let graph_before = graph_sha(&env);
    assert!(before["mastery_records"].0 > 100, "{before:?}");

    let dir = std::env::temp_dir().join(format!("{}-backup", env.name));
    let _ = std::fs::remove_dir_all(&dir);
    let (backup_s, text) = script("backup.sh", &env, &dir);
    println!("{text}");

    // 1. Exact: restore into an empty schema and graph.
    disaster(&env).await;
    let (restore_s, text) = script("restore.sh", &env, &dir);
    println!("{text}");
    assert_eq!(
        checksums(&schema).await,
        before,
        "tables equal after restore"
    );
    assert_eq!(graph_sha(&env), graph_before, "graph equal after restore");
    let r = drift(&env, true);
    assert_eq!(r.drift(), 0, "{r:?}");

    // 2. Work after the backup, then the disaster: nothing is lost.
    loadgen::generate_and_publish(&env.cfg, &o(1_500, 2), true)
        .await
        .expect("publish");
    run_until_idle(&env.cfg);
    let latest = mastery_table(&env.cfg).await;
    let graph_latest = graph_sha(&env);
    disaster(&env).await;
    let recover = Instant::now();
    script("restore.sh", &env, &dir);
    let restored_rows = mastery_table(&env.cfg).await.len();
    run_until_idle(&env.cfg);
    let repaired = drift(&env, false);
    let rto = recover.elapsed().as_secs_f64();
    assert_same_mastery("after catch-up", &latest, &mastery_table(&env.cfg).await);
    assert_eq!(drift(&env, true).drift(), 0);
    assert_eq!(
        graph_sha(&env),
        graph_latest,
        "graph equal to the pre-disaster one"
    );
    println!(
        "RPO/RTO: backup {backup_s:.1} s; exact restore {restore_s:.1} s; \
         restore + catch-up + graph repair {rto:.1} s; mastery rows {restored_rows} restored -> {} \
         after catch-up, {} graph repairs by reconcile; records lost 0",
        latest.len(),
        repaired.drift()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
