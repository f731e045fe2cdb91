//! The graph part of `make bench`: how fast `novyra graph` applies mastery
//! updates to Neo4j, how long `novyra reconcile` takes over the resulting
//! graph and how much memory it needs, and, in the same run, the naive
//! writer it replaces: one `MERGE ... SET` statement per update, autocommit.
//!
//! The updates are synthetic `MasteryUpdated` records (random students and
//! concepts, versions rising per key) published to the mastery topic before
//! the worker starts, so the figure is the sink's own speed: decode,
//! coalesce, `UNWIND` in one transaction per batch, store offsets.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use neo4rs::query;
use novyra_core::{keys, MasteryUpdated};
use novyra_graph::{mastery_by_concept, GraphBatch, GraphError, GraphStore};
use novyra_pipeline::loadgen::{self, LoadgenOptions};
use novyra_pipeline::reconcile::spill::bucket_of;
use novyra_pipeline::reconcile::Report;
use novyra_pipeline::Config;
use novyra_registry::{Codec, EventKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::measure::{self, Options, Worker};
use novyra_core::Topic;

/// Sizes of the graph benchmark.
#[derive(clap::Args, Debug, Clone)]
pub struct GraphOptions {
    /// Mastery updates applied by the graph sink.
    #[arg(long, default_value_t = 200_000)]
    graph_updates: usize,
    /// Students the updates are spread over.
    #[arg(long, default_value_t = 20_000)]
    graph_users: usize,
    /// Concepts the updates are spread over.
    #[arg(long, default_value_t = 500)]
    graph_concepts: usize,
    /// Updates written by the one-statement-per-update baseline.
    #[arg(long, default_value_t = 10_000)]
    graph_baseline_updates: usize,
}

/// Runs the graph benchmark and prints its report.
pub async fn run(
    base: &Config,
    o: &Options,
    novyra: &Path,
    me: &Path,
    stamp: &str,
) -> anyhow::Result<()> {
    let g = &o.graph;
    let cfg = measure::prefixed(base, &format!("{stamp}g"));
    let p = measure::id_prefix(&cfg);
    measure::setup(&cfg).await?;
    let result = measure_graph(&cfg, g, &p, novyra, me).await;
    measure::cleanup_with_graph(&cfg, o.keep).await;
    let r = result?;

    println!();
    println!("| graph writer | updates | seconds | edges/s | p50 ms | p95 ms | p99 ms | latency of | peak RSS MiB |");
    println!("|---|---:|---:|---:|---:|---:|---:|---|---:|");
    for (label, w, unit) in [
        (
            "novyra graph (UNWIND per batch)",
            &r.sink,
            "one batch commit",
        ),
        (
            "baseline (MERGE ... SET per update, autocommit)",
            &r.baseline,
            "one statement",
        ),
        (
            "ceiling: newest edge per key, UNWIND per max_batch, no version guard",
            &r.ceiling,
            "one transaction",
        ),
        (
            "ceiling, two writers at once (split by student)",
            &r.ceiling2,
            "two transactions",
        ),
        (
            "the sink's own write (lock, version guard) of the same, no Kafka",
            &r.guarded,
            "one transaction",
        ),
    ] {
        println!(
            "| {label} | {} | {:.1} | {:.0} | {:.1} | {:.1} | {:.1} | {unit} | {} |",
            w.updates,
            w.seconds,
            w.rate,
            w.p50 * 1e3,
            w.p95 * 1e3,
            w.p99 * 1e3,
            w.rss_mib.map_or("-".into(), |m| format!("{m:.0}")),
        );
    }
    println!();
    println!(
        "reconcile over {} edges, {} concepts, {} links: {:.1} s, peak RSS {:.0} MiB, {} records read, drift {}",
        r.edges, g.graph_concepts, r.links, r.reconcile_seconds, r.reconcile_rss_mib, r.report.records_read, r.report.drift()
    );
    println!(
        "graph sink speed-up over the baseline: {:.1}x (target >= 10x)",
        r.sink.rate / r.baseline.rate.max(f64::MIN_POSITIVE)
    );
    // The ceiling is the better of one writer and two at once.
    let ceiling = r.ceiling.rate.max(r.ceiling2.rate);
    println!(
        "graph sink at {:.0}% of the Neo4j write ceiling ({:.0} of {:.0} edges/s; target 40000 edges/s)",
        100.0 * r.sink.rate / ceiling.max(f64::MIN_POSITIVE),
        r.sink.rate,
        ceiling
    );
    println!(
        "two writers at once reach {:.0}% of one writer's ceiling",
        100.0 * r.ceiling2.rate / r.ceiling.rate.max(f64::MIN_POSITIVE),
    );
    println!(
        "the version guard and its lock leave {:.0}% of the ceiling ({:.0} edges/s); the sink reaches {:.0}% of that",
        100.0 * r.guarded.rate / r.ceiling.rate.max(f64::MIN_POSITIVE),
        r.guarded.rate,
        100.0 * r.sink.rate / r.guarded.rate.max(f64::MIN_POSITIVE),
    );
    Ok(())
}

#[derive(Debug, Default)]
struct Writer {
    updates: usize,
    seconds: f64,
    rate: f64,
    p50: f64,
    p95: f64,
    p99: f64,
    rss_mib: Option<f64>,
}

#[derive(Debug, Default)]
struct GraphFigures {
    sink: Writer,
    baseline: Writer,
    ceiling: Writer,
    ceiling2: Writer,
    guarded: Writer,
    edges: usize,
    links: usize,
    reconcile_seconds: f64,
    reconcile_rss_mib: f64,
    report: Report,
}

/// `n` updates over `users` × `concepts`, versions rising per key.
fn updates(
    g: &GraphOptions,
    user_prefix: &str,
    concept_prefix: &str,
    n: usize,
) -> Vec<MasteryUpdated> {
    let mut rng = StdRng::seed_from_u64(7);
    let mut versions: HashMap<(usize, usize), i64> = HashMap::new();
    let now = chrono::Utc::now().timestamp_millis();
    (0..n)
        .map(|i| {
            let u = rng.random_range(0..g.graph_users);
            let c = rng.random_range(0..g.graph_concepts);
            let v = versions.entry((u, c)).or_insert(0);
            *v += 1;
            MasteryUpdated {
                user_id: format!("{user_prefix}u{u:05}"),
                concept_id: format!("{concept_prefix}c{c:04}"),
                mastery: (rng.random_range(0.0..1.0_f64) * 1e4).round() / 1e4,
                version: *v,
                attempts_total: *v,
                attempts_correct: (*v + 1) / 2,
                confidence_weight: 1.0,
                last_event_id: format!("{user_prefix}e{i}"),
                updated_at: now - (n - i) as i64,
            }
        })
        .collect()
}

async fn measure_graph(
    cfg: &Config,
    g: &GraphOptions,
    p: &str,
    novyra: &Path,
    me: &Path,
) -> anyhow::Result<GraphFigures> {
    let mut f = GraphFigures::default();
    let codec = Codec::new(&cfg.registry())?;
    let producer = cfg.kafka().producer()?;

    // The curriculum, then the updates, all on the topics before the sink starts.
    let lo = LoadgenOptions {
        concepts: g.graph_concepts,
        domains: 10,
        students: g.graph_users,
        attempts: 0,
        seed: 42,
        rate: 0,
        days: 30,
        id_prefix: p.to_owned(),
    };
    let c = loadgen::curriculum(&lo, chrono::Utc::now().timestamp_millis());
    let ups = updates(g, p, p, g.graph_updates);
    f.edges = ups
        .iter()
        .map(|m| (&m.user_id, &m.concept_id))
        .collect::<std::collections::HashSet<_>>()
        .len();
    let keyed: Vec<(String, MasteryUpdated)> = ups
        .into_iter()
        .map(|m| (keys::mastery_key(&m.user_id, &m.concept_id), m))
        .collect();
    eprintln!(
        "[bench] graph: preloading {} concepts, their links, {} mastery updates",
        c.concepts.len(),
        keyed.len()
    );
    let (n_concepts, n_links) =
        loadgen::publish_curriculum(cfg, &codec, &producer, &c, true).await?;
    f.links = n_links;
    loadgen::publish(
        &codec,
        &producer,
        &cfg.topic(Topic::Mastery),
        EventKind::Mastery,
        &keyed,
        0,
        true,
    )
    .await?;
    drop(keyed);

    // The sink, cold, over everything.
    let total = (n_concepts + n_links + g.graph_updates) as f64;
    let mut child = Worker::Graph.spawn(cfg, novyra, me)?;
    let group = cfg.group(Worker::Graph.group_suffix());
    let addr = cfg.pipeline.metrics_addr.clone();
    let drained = measure::drain(&mut child, Worker::Graph, &addr, &group, total).await;
    let metrics = crate::metrics::scrape(&addr).await;
    f.sink.rss_mib = Some(measure::peak_rss_mib(&child));
    drop(child);
    let (seconds, rate) = drained?;
    f.sink.updates = g.graph_updates;
    f.sink.seconds = seconds;
    f.sink.rate = rate;
    let hist = crate::metrics::histogram_delta(
        &Default::default(),
        &metrics?,
        "novyra_batch_write_seconds",
        &group,
    );
    f.sink.p50 = crate::metrics::quantile(&hist, 0.50);
    f.sink.p95 = crate::metrics::quantile(&hist, 0.95);
    f.sink.p99 = crate::metrics::quantile(&hist, 0.99);
    eprintln!(
        "[bench] graph: {:.0} edges/s over {:.1} s",
        f.sink.rate, f.sink.seconds
    );

    // Reconcile over that graph, as its own process.
    eprintln!("[bench] graph: reconcile");
    let (seconds, rss, report) = reconcile(cfg, novyra, &["--id-prefix", p])?;
    f.reconcile_seconds = seconds;
    f.reconcile_rss_mib = rss;
    f.report = report;

    // The baseline, on users of its own.
    eprintln!(
        "[bench] graph: baseline, {} statements",
        g.graph_baseline_updates
    );
    f.baseline = baseline(cfg, g, p).await?;

    // The ceiling, on users of its own, then the production write of the
    // same shape on other users: the difference is what the guard costs,
    // the rest of the gap to the sink is Kafka, decoding and coalescing.
    eprintln!("[bench] graph: ceiling");
    f.ceiling = ceiling(cfg, g, p, 1).await?;
    eprintln!("[bench] graph: ceiling, two writers");
    f.ceiling2 = ceiling(cfg, g, p, 2).await?;
    eprintln!("[bench] graph: the sink's write without Kafka");
    f.guarded = guarded(cfg, g, p).await?;
    Ok(f)
}

/// Runs `novyra reconcile --json` with `args` and samples its peak RSS
/// while it runs.
pub(crate) fn reconcile(
    cfg: &Config,
    novyra: &Path,
    args: &[&str],
) -> anyhow::Result<(f64, f64, Report)> {
    let started = Instant::now();
    let mut child = measure::pointed_at(&mut Command::new(novyra), cfg)
        .args(["reconcile", "--json"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting novyra reconcile")?;
    let mut rss: f64 = 0.0;
    // NB: VmHWM only grows, so the last sample before exit is the peak to
    // within one sampling interval.
    while child.try_wait()?.is_none() {
        rss = rss.max(measure::peak_rss_mib(&child));
        std::thread::sleep(Duration::from_millis(20));
    }
    let seconds = started.elapsed().as_secs_f64();
    let out = child.wait_with_output()?;
    anyhow::ensure!(
        out.status.success(),
        "novyra reconcile failed: {}",
        out.status
    );
    let report: Report = serde_json::from_slice(&out.stdout).context("reconcile --json output")?;
    Ok((seconds, rss, report))
}

/// One `MERGE ... SET` per update in its own autocommit transaction, the
/// way a hand-written sink without batching does it.
async fn baseline(cfg: &Config, g: &GraphOptions, p: &str) -> anyhow::Result<Writer> {
    let neo = neo4rs::Graph::new(&cfg.neo4j.uri, &cfg.neo4j.user, &cfg.neo4j.password)?;
    let ups = updates(g, &format!("{p}base-"), p, g.graph_baseline_updates);
    let mut took = Vec::with_capacity(ups.len());
    let started = Instant::now();
    for m in &ups {
        let t = Instant::now();
        neo.run(
            query(
                "MERGE (u:User {id: $user}) MERGE (c:Concept {id: $concept}) \
                 MERGE (u)-[r:MASTERED_BY]->(c) \
                 SET r.score = $score, r.version = $version, r.updatedAt = $at",
            )
            .param("user", m.user_id.as_str())
            .param("concept", m.concept_id.as_str())
            .param("score", m.mastery)
            .param("version", m.version)
            .param("at", m.updated_at),
        )
        .await?;
        took.push(t.elapsed().as_secs_f64());
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Writer::timed(ups.len(), seconds, took))
}

/// The updates of one writer below the sink, for users of their own
/// (`tag`), coalesced to the newest per edge before any clock starts and
/// cut into `pipeline.max_batch` rows, as the sink's batches are.
fn newest_chunks(cfg: &Config, g: &GraphOptions, p: &str, tag: &str) -> Vec<Vec<MasteryUpdated>> {
    let mut newest: std::collections::BTreeMap<(String, String), MasteryUpdated> =
        Default::default();
    for m in updates(g, &format!("{p}{tag}-"), p, g.graph_updates) {
        newest.insert((m.user_id.clone(), m.concept_id.clone()), m);
    }
    let all: Vec<MasteryUpdated> = newest.into_values().collect();
    all.chunks(cfg.pipeline.max_batch.max(1))
        .map(<[_]>::to_vec)
        .collect()
}

/// What Neo4j itself absorbs: one `UNWIND ... MERGE ... SET` transaction
/// per chunk of [`newest_chunks`] without the version guard, grouped by
/// concept, parameters built in advance. The sink decodes, coalesces,
/// guards versions and stores offsets on top. With `lanes` > 1 each chunk
/// is split by student into that many transactions run at once: whether a
/// second writer gets more out of Neo4j than one.
async fn ceiling(cfg: &Config, g: &GraphOptions, p: &str, lanes: usize) -> anyhow::Result<Writer> {
    let neo = neo4rs::Graph::new(&cfg.neo4j.uri, &cfg.neo4j.user, &cfg.neo4j.password)?;
    let newest = newest_chunks(cfg, g, p, &format!("ceil{lanes}"));
    let rows = newest.iter().map(Vec::len).sum();
    // Per chunk, per writer: its edges, and their parameters built before
    // the clock starts (built again only for a deadlock's rerun).
    let chunks: Vec<Vec<(Vec<&MasteryUpdated>, Vec<Params>)>> = newest
        .iter()
        .map(|chunk| {
            let mut split: Vec<Vec<&MasteryUpdated>> = vec![Vec::new(); lanes];
            for m in chunk {
                split[bucket_of(&m.user_id, lanes)].push(m);
            }
            split
                .into_iter()
                .map(|edges| {
                    let params = mastery_by_concept(edges.iter().copied());
                    (edges, params)
                })
                .collect()
        })
        .collect();
    let deadlocks = AtomicUsize::new(0);
    let deadlocks_ref = &deadlocks;
    let mut took = Vec::with_capacity(chunks.len());
    let started = Instant::now();
    for chunk in chunks {
        let t = Instant::now();
        futures::future::try_join_all(chunk.into_iter().map(|(edges, params)| {
            let neo = &neo;
            async move {
                let mut params = Some(params);
                let mut tries = 0;
                loop {
                    let rows = params
                        .take()
                        .unwrap_or_else(|| mastery_by_concept(edges.iter().copied()));
                    match unguarded(neo, rows).await.map_err(GraphError::Neo4j) {
                        // Two writers of one concept's edges can deadlock
                        // on its relationship-group lock; Neo4j aborts one.
                        Err(e) if tries < 10 && e.is_transient() => {
                            tries += 1;
                            deadlocks_ref.fetch_add(1, Ordering::Relaxed);
                        }
                        r => return r,
                    }
                }
            }
        }))
        .await?;
        took.push(t.elapsed().as_secs_f64());
    }
    let seconds = started.elapsed().as_secs_f64();
    let deadlocks = deadlocks.into_inner();
    if deadlocks > 0 {
        eprintln!("[bench] graph: {deadlocks} deadlocked transactions run again ({lanes} writers)");
    }
    Ok(Writer::timed(rows, seconds, took))
}

type Params = HashMap<&'static str, neo4rs::BoltType>;

/// One unguarded `UNWIND ... MERGE ... SET` transaction of the ceiling,
/// its rows grouped by concept as the sink's are.
async fn unguarded(neo: &neo4rs::Graph, rows: Vec<Params>) -> Result<(), neo4rs::Error> {
    let mut txn = neo.start_txn().await?;
    txn.run(
        query(
            "UNWIND $rows AS g MERGE (c:Concept {id: g.concept}) \
             WITH c, g UNWIND g.edges AS row \
             MERGE (u:User {id: row.user}) MERGE (u)-[r:MASTERED_BY]->(c) \
             SET r.score = row.score, r.version = row.version, r.updatedAt = row.updated_at",
        )
        .param("rows", rows),
    )
    .await?;
    txn.commit().await
}

/// The sink's own write path ([`GraphStore::write`]: the write lock, the
/// version guard, one transaction per batch) over the same shape of
/// batches, with no Kafka and no decoding: between the ceiling and the
/// sink, it shows which side of the gap the guard is on.
async fn guarded(cfg: &Config, g: &GraphOptions, p: &str) -> anyhow::Result<Writer> {
    let store = GraphStore::new(&cfg.neo4j.uri, &cfg.neo4j.user, &cfg.neo4j.password)?;
    let batches: Vec<GraphBatch> = newest_chunks(cfg, g, p, "guard")
        .into_iter()
        .map(|chunk| {
            let mut b = GraphBatch::default();
            for m in chunk {
                b.mastery(m);
            }
            b
        })
        .collect();
    let rows = batches.iter().map(|b| b.mastery.len()).sum();
    let mut took = Vec::with_capacity(batches.len());
    let started = Instant::now();
    for b in &batches {
        let t = Instant::now();
        store.write(b).await?;
        took.push(t.elapsed().as_secs_f64());
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(Writer::timed(rows, seconds, took))
}

impl Writer {
    /// A writer's figures from its per-unit times (seconds).
    fn timed(updates: usize, seconds: f64, mut took: Vec<f64>) -> Self {
        took.sort_by(f64::total_cmp);
        let pct = |q: f64| {
            took.get(((took.len() as f64 * q) as usize).min(took.len().saturating_sub(1)))
                .copied()
                .unwrap_or(f64::NAN)
        };
        Writer {
            updates,
            seconds,
            rate: updates as f64 / seconds.max(1e-3),
            p50: pct(0.50),
            p95: pct(0.95),
            p99: pct(0.99),
            rss_mib: None,
        }
    }
}
