//! `novyra demo`'s run. The pipeline starts first, joins its groups and
//! takes in the curriculum; only then are the attempts published (at the
//! offered rate), so the report can tell start-up (group joins, catalogue)
//! from the pipeline's steady rate, and freshness is measured on running
//! consumers rather than on a backlog they had not started on.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::error::WorkerError;
use crate::loadgen::{self, LoadgenOptions, Published};
use crate::metrics::RateProbe;
use crate::run::{run_with, wait_caught_up, Until, Worker};
use crate::{Config, Health};

/// What the demo measured.
#[derive(Debug, Clone)]
pub struct DemoRun {
    /// What was published.
    pub published: Published,
    /// Offered rate of the attempts (0: as fast as the producer could).
    pub offered_rate: u64,
    /// From start to every group joined and the curriculum taken in.
    pub startup: Duration,
    /// From start to the pipeline idle with everything applied.
    pub elapsed: Duration,
    /// Attempts per second from the ingest's first commit to its last.
    pub ingest_rate: Option<f64>,
    /// Graph freshness p50, p95, p99 in seconds (see
    /// [`crate::Metrics::graph_freshness`]).
    pub freshness: Option<Vec<f64>>,
    /// The same quantiles of the first hop (attempt to Postgres commit)
    /// and of the last (mastery record to Neo4j commit); the relay's hop
    /// is what is left.
    pub hops: [Option<Vec<f64>>; 2],
}

/// Runs the whole pipeline around a generated load; see the module doc.
pub async fn run(
    cfg: &Config,
    o: &LoadgenOptions,
    stop: CancellationToken,
) -> Result<DemoRun, WorkerError> {
    let started = Instant::now();
    let health = Health::new();
    let release = Arc::new(AtomicBool::new(false));
    let pipeline = {
        let (cfg, health, until, stop) = (
            cfg.clone(),
            health.clone(),
            Until::Idle(release.clone()),
            stop.clone(),
        );
        tokio::spawn(async move { run_with(&cfg, &Worker::ALL, until, stop, &health).await })
    };
    let probe = RateProbe::start(
        health
            .metrics
            .committed
            .with_label_values(&[&cfg.group(crate::ingest::GROUP)]),
    );
    let mut startup = Duration::ZERO;
    let ready = async {
        joined(cfg, &health, &stop).await;
        let curriculum = [
            cfg.group(crate::catalog::GROUP),
            cfg.group(crate::graph_sink::GROUP),
        ];
        wait_caught_up(cfg, &curriculum, &stop, Duration::from_secs(120)).await;
        startup = started.elapsed();
    };
    let published = loadgen::generate_and_publish_after(cfg, o, false, ready).await;
    release.store(true, Ordering::SeqCst);
    let published = match published {
        Ok(p) => p,
        Err(e) => {
            stop.cancel();
            let _ = pipeline.await;
            return Err(e.into());
        }
    };
    let ran = pipeline
        .await
        .map_err(|e| WorkerError::Join(e.to_string()))?;
    let elapsed = started.elapsed();
    let ingest_rate = probe.finish();
    ran?;
    let qs = [0.50, 0.95, 0.99];
    let hop = |g: &str| health.metrics.end_to_end_quantiles(&cfg.group(g), &qs);
    Ok(DemoRun {
        ingest_rate,
        freshness: health.metrics.freshness_quantiles(&qs),
        hops: [hop(crate::ingest::GROUP), hop(crate::graph_sink::GROUP)],
        published,
        offered_rate: o.rate,
        startup,
        elapsed,
    })
}

/// Waits until every consumer group of the run has had its partitions
/// assigned (a rebalance seen), or `stop`.
async fn joined(cfg: &Config, health: &Health, stop: &CancellationToken) {
    let groups: Vec<String> = Worker::ALL
        .iter()
        .map(|w| cfg.group(w.group().suffix()))
        .collect();
    while !stop.is_cancelled()
        && !groups
            .iter()
            .all(|g| health.metrics.rebalances.with_label_values(&[g]).get() > 0)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
