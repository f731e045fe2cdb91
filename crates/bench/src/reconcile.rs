//! The reconcile part of `make bench`: `novyra reconcile` over a graph of
//! millions of mastery edges, with Postgres and the mastery topic holding
//! the same keys, and known drift injected into both. It reports time and
//! peak RSS with the spill in its default buckets, beside the same dry run
//! with one bucket (every key in memory at once, as reconcile worked
//! before it spilled), and checks that both find exactly the injected drift.

use std::path::{Path, PathBuf};

use anyhow::{ensure, Context};
use diesel_async::RunQueryDsl;
use neo4rs::query;
use novyra_core::{keys, MasteryUpdated, Topic};
use novyra_pipeline::loadgen;
use novyra_pipeline::reconcile::Report;
use novyra_pipeline::Config;
use novyra_registry::{Codec, EventKind};

use crate::measure::{self, Options, Worker};

/// Sizes of the reconcile benchmark.
#[derive(clap::Args, Debug, Clone)]
pub struct ReconcileOptions {
    /// Mastery edges in the graph (and keys on the topic and in Postgres).
    #[arg(long, default_value_t = 2_000_000)]
    reconcile_edges: usize,
    /// Edges deleted, scores corrupted, and Postgres rows moved ahead of
    /// the topic (each), for reconcile to find.
    #[arg(long, default_value_t = 1_000)]
    reconcile_drift: usize,
}

/// Concepts per student, and concepts in all.
const PER_USER: usize = 20;
const CONCEPTS: usize = 500;

/// The `i`th key: 20 concepts per student, spread over 500 concepts.
fn key(p: &str, i: usize) -> (String, String) {
    let u = i / PER_USER;
    let c = (u * 13 + i % PER_USER) % CONCEPTS;
    (format!("{p}u{u:07}"), format!("{p}c{c:04}"))
}

/// The `i`th edge's score: the same expression in Rust and in SQL, so
/// Postgres, the topic and the graph agree bit for bit.
fn score(i: usize) -> f64 {
    (i % 10_000) as f64 / 10_000.0
}

#[derive(Debug)]
struct Run {
    label: &'static str,
    buckets_rows: usize,
    seconds: f64,
    rss_mib: f64,
    report: Report,
}

/// Runs the reconcile benchmark and prints its report.
pub async fn run(
    base: &Config,
    o: &Options,
    novyra: &Path,
    me: &Path,
    stamp: &str,
) -> anyhow::Result<()> {
    let cfg = measure::prefixed(base, &format!("{stamp}r"));
    let p = measure::id_prefix(&cfg);
    measure::setup(&cfg).await?;
    let result = measure_reconcile(&cfg, &o.reconcile, &p, novyra, me).await;
    measure::cleanup_with_graph(&cfg, o.keep).await;
    let (sink_rate, runs) = result?;

    let r = &o.reconcile;
    println!();
    println!(
        "| reconcile over {} edges ({} drifted x3) | buckets of | seconds | peak RSS MiB | KiB per edge | drift found |",
        r.reconcile_edges, r.reconcile_drift
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for run in &runs {
        println!(
            "| {} | {} | {:.1} | {:.0} | {:.3} | {} |",
            run.label,
            run.buckets_rows,
            run.seconds,
            run.rss_mib,
            run.rss_mib * 1024.0 / r.reconcile_edges.max(1) as f64,
            run.report.drift()
        );
    }
    if let Some(spilled) = runs.iter().find(|r| r.label.starts_with("spilled, repair")) {
        println!(
            "reconcile peak RSS at {} edges: {:.0} MiB (target < 256 MiB); graph sink loading them: {:.0} edges/s",
            r.reconcile_edges, spilled.rss_mib, sink_rate
        );
    }
    Ok(())
}

async fn measure_reconcile(
    cfg: &Config,
    r: &ReconcileOptions,
    p: &str,
    novyra: &Path,
    me: &Path,
) -> anyhow::Result<(f64, Vec<Run>)> {
    let n = r.reconcile_edges;
    let d = r.reconcile_drift;
    ensure!(
        d * 3 < n,
        "--reconcile-drift must be well below --reconcile-edges"
    );
    let now = chrono::Utc::now().timestamp_millis();

    // Postgres: the rows, generated where they are stored.
    eprintln!("[bench] reconcile: {n} mastery rows into Postgres");
    let store = novyra_store::Store::new(&cfg.store())?;
    let schema = cfg
        .database
        .schema
        .clone()
        .context("the bench runs in a schema")?;
    let mut conn = store.session().await?;
    diesel::sql_query(format!(
        "INSERT INTO \"{schema}\".mastery_records (user_id, concept_id, mastery, attempts_total, \
         attempts_correct, confidence_weight, version, last_event_id, updated_at) \
         SELECT $1 || 'u' || lpad((i / {PER_USER})::text, 7, '0'), \
                $1 || 'c' || lpad((((i / {PER_USER}) * 13 + i % {PER_USER}) % {CONCEPTS})::text, 4, '0'), \
                (i % 10000)::float8 / 10000.0, 1, 1, 1.0, 1, 'e' || i, to_timestamp($2 / 1000.0) \
         FROM generate_series(0, $3 - 1) AS i"
    ))
    .bind::<diesel::sql_types::Text, _>(p)
    .bind::<diesel::sql_types::Double, _>(now as f64)
    .bind::<diesel::sql_types::BigInt, _>(n as i64)
    .execute(&mut conn)
    .await
    .context("generating mastery rows")?;

    // The topic: the same keys and scores.
    eprintln!("[bench] reconcile: {n} mastery records onto the topic");
    let codec = Codec::new(&cfg.registry())?;
    let producer = cfg.kafka().producer()?;
    let topic = cfg.topic(Topic::Mastery);
    for chunk in (0..n).collect::<Vec<_>>().chunks(100_000) {
        let items: Vec<(String, MasteryUpdated)> = chunk
            .iter()
            .map(|&i| {
                let (u, c) = key(p, i);
                let m = MasteryUpdated {
                    user_id: u,
                    concept_id: c,
                    mastery: score(i),
                    version: 1,
                    attempts_total: 1,
                    attempts_correct: 1,
                    confidence_weight: 1.0,
                    last_event_id: format!("e{i}"),
                    updated_at: now,
                };
                (keys::mastery_key(&m.user_id, &m.concept_id), m)
            })
            .collect();
        loadgen::publish(
            &codec,
            &producer,
            &topic,
            EventKind::Mastery,
            &items,
            0,
            true,
        )
        .await?;
    }

    // The graph, through the graph sink.
    eprintln!("[bench] reconcile: the graph sink loads them");
    let mut child = Worker::Graph.spawn(cfg, novyra, me)?;
    let group = cfg.group(Worker::Graph.group_suffix());
    let addr = cfg.pipeline.metrics_addr.clone();
    let drained = measure::drain(&mut child, Worker::Graph, &addr, &group, n as f64).await;
    drop(child);
    let (_, sink_rate) = drained?;

    // The drift: edges deleted and corrupted in the graph, rows moved
    // ahead of the topic in Postgres.
    let neo = neo4rs::Graph::new(&cfg.neo4j.uri, &cfg.neo4j.user, &cfg.neo4j.password)?;
    for (what, cypher) in [
        (
            "deleted",
            "MATCH (u:User)-[r:MASTERED_BY]->() WHERE u.id STARTS WITH $p \
             WITH r LIMIT $d DELETE r RETURN count(*) AS n",
        ),
        (
            "corrupted",
            "MATCH (u:User)-[r:MASTERED_BY]->() WHERE u.id STARTS WITH $p AND r.score >= 0 \
             WITH r LIMIT $d SET r.score = -1.0 RETURN count(*) AS n",
        ),
    ] {
        let q = query(cypher).param("p", p).param("d", d as i64);
        let mut rows = neo4rs::Graph::execute(&neo, q).await?;
        let mut done = 0_i64;
        while let Some(row) = rows.next().await? {
            done = row.get("n")?;
        }
        ensure!(done == d as i64, "{what} {done} edges, not {d}");
    }
    let bumped = diesel::sql_query(format!(
        "UPDATE \"{schema}\".mastery_records SET version = version + 1 \
         WHERE (user_id, concept_id) IN (SELECT user_id, concept_id \
               FROM \"{schema}\".mastery_records ORDER BY user_id, concept_id LIMIT $1)"
    ))
    .bind::<diesel::sql_types::BigInt, _>(d as i64)
    .execute(&mut conn)
    .await?;
    ensure!(bumped == d, "moved {bumped} Postgres rows ahead, not {d}");
    drop(conn);

    // One bucket (everything in memory) and the default, both dry; then
    // the default for real.
    let one_bucket = std::env::temp_dir().join(format!("{}-one-bucket.toml", cfg.topic_prefix));
    std::fs::write(
        &one_bucket,
        format!("[pipeline]\nreconcile_bucket_rows = {}\n", n * 2),
    )?;
    let default_rows = Config::default().pipeline.reconcile_bucket_rows;
    let mut runs = Vec::new();
    for (label, file, bucket_rows, dry) in [
        (
            "in memory (one bucket), dry run",
            Some(&one_bucket),
            n * 2,
            true,
        ),
        ("spilled, dry run", None::<&PathBuf>, default_rows, true),
        ("spilled, repair", None, default_rows, false),
    ] {
        eprintln!("[bench] reconcile: {label}");
        let mut extra = vec!["--id-prefix", p];
        if dry {
            extra.push("--dry-run");
        }
        let file = file.map(|f| f.display().to_string());
        if let Some(f) = &file {
            extra.extend(["--config", f.as_str()]);
        }
        let (seconds, rss_mib, report) = crate::graph::reconcile(cfg, novyra, &extra)?;
        let found = (
            report.missing_mastery,
            report.stale_mastery,
            report.republished,
            report.drift(),
        );
        ensure!(
            found == (d as u64, d as u64, d as u64, 3 * d as u64),
            "{label}: reconcile found {found:?} (missing, stale, republished, all), not {d} each: {report:?}"
        );
        runs.push(Run {
            label,
            buckets_rows: bucket_rows,
            seconds,
            rss_mib,
            report,
        });
    }
    let _ = std::fs::remove_file(&one_bucket);
    Ok((sink_rate, runs))
}
