//! The freshness part of `make bench` (issue 11, target 2): `novyra run`
//! with every group in one process, attempts offered at `--rate` for
//! `--latency-secs`, and the time from each attempt's Kafka timestamp to
//! its `MASTERED_BY` edge committed in Neo4j, from the run's own
//! `novyra_graph_freshness_seconds` (plus each hop's share from
//! `novyra_end_to_end_latency_seconds`). Target: p99 < 250 ms.

use std::path::Path;
use std::time::{Duration, Instant};

use novyra_pipeline::loadgen;
use novyra_pipeline::{CancellationToken, Config};

use crate::measure::{self, Options, Worker};
use crate::metrics::{histogram_delta, quantile, scrape};

const FRESHNESS: &str = "novyra_graph_freshness_seconds";
const E2E: &str = "novyra_end_to_end_latency_seconds";

/// Measures and prints the freshness report.
pub async fn run(
    base: &Config,
    o: &Options,
    novyra: &Path,
    me: &Path,
    stamp: &str,
) -> anyhow::Result<()> {
    let cfg = measure::prefixed(base, &format!("{stamp}f"));
    measure::setup(&cfg).await?;
    let result = measure_freshness(&cfg, o, novyra, me).await;
    // NB: `novyra run` put the load's students and concepts in Neo4j too.
    measure::cleanup_with_graph(&cfg, o.keep).await;
    result
}

async fn measure_freshness(
    cfg: &Config,
    o: &Options,
    novyra: &Path,
    me: &Path,
) -> anyhow::Result<()> {
    let mut child = Worker::Pipeline.spawn(cfg, novyra, me)?;
    let addr = cfg.pipeline.metrics_addr.clone();
    let ingest = cfg.group(novyra_pipeline::ingest::GROUP);
    let graph = cfg.group(novyra_pipeline::graph_sink::GROUP);
    let stop = CancellationToken::new();
    // The curriculum first, then the attempts once the catalog and the
    // graph hold it, so no attempt waits for (or is recomputed after) its
    // concept.
    let publish = |n: usize, rate: u64, run: &'static str| {
        let (cfg, stop) = (cfg.clone(), stop.clone());
        let load = measure::load(&cfg, o, n, rate, run);
        async move {
            let groups = [
                cfg.group(novyra_pipeline::catalog::GROUP),
                cfg.group(novyra_pipeline::graph_sink::GROUP),
            ];
            let ready = novyra_pipeline::run::wait_caught_up(
                &cfg,
                &groups,
                &stop,
                Duration::from_secs(120),
            );
            loadgen::generate_and_publish_after(&cfg, &load, true, ready).await
        }
    };
    let warm = 2_000usize;
    publish(warm, 0, "w").await?;
    measure::wait_committed(
        &mut child,
        Worker::Pipeline,
        &addr,
        &ingest,
        warm as f64,
        Duration::from_secs(120),
    )
    .await?;
    settled(&mut child, &addr).await?;
    let before = scrape(&addr).await?;
    let paced = (o.rate * o.latency_secs) as usize;
    eprintln!(
        "[bench] freshness: offering {} attempts/s for {} s to novyra run",
        o.rate, o.latency_secs
    );
    publish(paced, o.rate, "l").await?;
    measure::wait_committed(
        &mut child,
        Worker::Pipeline,
        &addr,
        &ingest,
        (warm + paced) as f64,
        Duration::from_secs(300 + paced as u64 / 200),
    )
    .await?;
    settled(&mut child, &addr).await?;
    let after = scrape(&addr).await?;
    let rss = measure::peak_rss_mib(&child);
    drop(child);

    let q = |h: &[(f64, f64)]| [0.50, 0.95, 0.99].map(|p| quantile(h, p) * 1e3);
    let fresh = histogram_delta(&before, &after, FRESHNESS, "");
    let n = fresh.last().map_or(0.0, |b| b.1);
    let rows = [
        (
            "graph freshness (attempt in Kafka to its edge in Neo4j)",
            q(&fresh),
            n,
        ),
        (
            "  hop 1: attempt in Kafka to its Postgres commit",
            q(&histogram_delta(&before, &after, E2E, &ingest)),
            f64::NAN,
        ),
        (
            "  hop 3: mastery record in Kafka to its Neo4j commit",
            q(&histogram_delta(&before, &after, E2E, &graph)),
            f64::NAN,
        ),
    ];
    println!();
    println!(
        "| freshness at {}/s offered, every group in one `novyra run` ({:.0} MiB peak RSS) | n | p50 ms | p95 ms | p99 ms |",
        o.rate, rss
    );
    println!("|---|---:|---:|---:|---:|");
    for (label, [p50, p95, p99], n) in rows {
        let n = if n.is_nan() {
            "—".to_owned()
        } else {
            format!("{n:.0}")
        };
        println!("| {label} | {n} | {p50:.0} | {p95:.0} | {p99:.0} |");
    }
    println!();
    println!(
        "graph freshness p99 {:.0} ms at {}/s (target < 250 ms)",
        q(&fresh)[2],
        o.rate
    );
    Ok(())
}

/// Waits until the graph has applied what the ingest committed: the
/// freshness histogram's count unchanged for two seconds.
async fn settled(child: &mut std::process::Child, addr: &str) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut last = (f64::NAN, Instant::now());
    while started.elapsed() < Duration::from_secs(300) {
        measure::check_alive(child, Worker::Pipeline)?;
        let m = scrape(addr).await?;
        let n = m.buckets(FRESHNESS, "").last().map_or(0.0, |b| b.1);
        if n != last.0 {
            last = (n, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(2) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    anyhow::bail!("the graph did not settle in 300 s")
}
