//! Running workers: one alone, or every group in one process (`novyra run`),
//! optionally returning once every group has caught up.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use novyra_kafka::lag::{describe_group, group_lag, PartitionLag};
use tokio_util::sync::CancellationToken;

pub use crate::error::WorkerError;
use crate::workers::audit;
use crate::{catalog, graph_sink, ingest, recompute, relay, Config, Health};
use novyra_core::{Group, Topic};

/// Which workers to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Worker {
    /// `novyra-ingest` plus the outbox relay.
    Ingest,
    /// `novyra-catalog`.
    Catalog,
    /// `novyra-graph`.
    Graph,
    /// `novyra-audit`.
    Audit,
}

impl Worker {
    /// Every worker: what `novyra run` starts.
    pub const ALL: [Worker; 4] = [
        Worker::Catalog,
        Worker::Ingest,
        Worker::Graph,
        Worker::Audit,
    ];

    /// The consumer group it runs.
    pub const fn group(self) -> Group {
        match self {
            Worker::Ingest => Group::Ingest,
            Worker::Catalog => Group::Catalog,
            Worker::Graph => Group::Graph,
            Worker::Audit => Group::Audit,
        }
    }
}

/// Groups and the topics they consume, from the topic table.
pub fn groups(cfg: &Config) -> Vec<(String, Vec<String>)> {
    Group::ALL
        .into_iter()
        .map(|g| (cfg.group(g.suffix()), cfg.topics(g)))
        .collect()
}

/// The `reason` label of `novyra_reconcile_aborted_total` for a failed
/// run: only `interrupted` may have written (part of its repairs).
fn aborted_reason(e: &WorkerError) -> &'static str {
    match e {
        WorkerError::Incomplete(_) => "incomplete",
        WorkerError::RepairInterrupted(_) => "interrupted",
        _ => "error",
    }
}

/// Lag of every group, as Kafka's own tools report it.
pub async fn all_lag(cfg: &Config) -> Result<Vec<(String, Vec<PartitionLag>)>, WorkerError> {
    lag_with(cfg, group_lag).await
}

/// [`all_lag`] with owners and seconds, for `novyra lag`.
pub async fn describe_lag(cfg: &Config) -> Result<Vec<(String, Vec<PartitionLag>)>, WorkerError> {
    lag_with(cfg, describe_group).await
}

/// How one group's lag is read.
type LagFn = fn(
    &novyra_kafka::KafkaConfig,
    &str,
    &[String],
) -> Result<Vec<PartitionLag>, novyra_kafka::KafkaError>;

async fn lag_with(cfg: &Config, f: LagFn) -> Result<Vec<(String, Vec<PartitionLag>)>, WorkerError> {
    let kafka = cfg.kafka();
    let gs = groups(cfg);
    tokio::task::spawn_blocking(move || {
        gs.into_iter()
            .map(|(g, topics)| f(&kafka, &g, &topics).map(|l| (g, l)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(WorkerError::from)
    })
    .await
    .map_err(|e| WorkerError::Join(e.to_string()))?
}

fn spawn(
    set: &mut tokio::task::JoinSet<Result<(), WorkerError>>,
    w: Worker,
    cfg: &Config,
    health: &Health,
    stop: &CancellationToken,
) {
    let (cfg, health, stop) = (cfg.clone(), health.clone(), stop.clone());
    match w {
        Worker::Ingest => {
            let (c2, h2, s2) = (cfg.clone(), health.clone(), stop.clone());
            let relay = cfg.pipeline.relay;
            if cfg.pipeline.leaderboard_refresh_secs > 0 {
                let (c3, s3) = (cfg.clone(), stop.clone());
                set.spawn(async move { refresh_leaderboard(&c3, s3).await });
            }
            let queued = Arc::new(tokio::sync::Notify::new());
            let q2 = queued.clone();
            set.spawn(async move { ingest::run(&cfg, &health, stop, &queued).await });
            if relay {
                set.spawn(async move { relay::run(&c2, &h2, s2, &q2).await });
            }
        }
        Worker::Catalog => {
            let (h2, s2) = (health.clone(), stop.clone());
            let store = novyra_store::Store::new(&cfg.store());
            set.spawn(async move { catalog::run(&cfg, &health, stop).await });
            set.spawn(async move { recompute::run(&store?, &h2, s2).await });
        }
        Worker::Graph => {
            set.spawn(async move { graph_sink::run(&cfg, &health, stop).await });
        }
        Worker::Audit => {
            set.spawn(async move { audit::run(&cfg, &health, stop).await });
        }
    }
}

/// Refreshes the analysts' leaderboard every
/// `pipeline.leaderboard_refresh_secs` until `stop`. A failed refresh is
/// logged and retried next time: the old contents stay readable.
async fn refresh_leaderboard(cfg: &Config, stop: CancellationToken) -> Result<(), WorkerError> {
    let store = novyra_store::Store::new(&cfg.store())?;
    let every = Duration::from_secs(cfg.pipeline.leaderboard_refresh_secs);
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return Ok(()),
        }
        let started = std::time::Instant::now();
        match store.refresh_leaderboard().await {
            Ok(()) => tracing::debug!(
                seconds = started.elapsed().as_secs_f64(),
                "leaderboard refreshed"
            ),
            Err(e) => tracing::warn!(error = %e, "leaderboard refresh failed"),
        }
    }
}

/// Runs `workers` until `stop` (or, with `exit_when_idle`, until every
/// group has zero lag and the outbox is empty twice in a row). Serves the
/// metrics endpoint meanwhile.
pub async fn run(
    cfg: &Config,
    workers: &[Worker],
    exit_when_idle: bool,
    stop: CancellationToken,
) -> Result<(), WorkerError> {
    let until = if exit_when_idle {
        Until::idle()
    } else {
        Until::Stopped
    };
    run_with(cfg, workers, until, stop, &Health::new()).await
}

/// When [`run_with`] ends by itself.
#[derive(Debug, Clone)]
pub enum Until {
    /// Never: only on `stop`.
    Stopped,
    /// Once every group is idle (as in [`run`]) while the flag is set. A
    /// caller still publishing leaves it unset, so a pause between its
    /// records is not taken for the end of the work.
    Idle(Arc<AtomicBool>),
}

impl Until {
    /// Once every group is idle, with nothing held back.
    pub fn idle() -> Self {
        Until::Idle(Arc::new(AtomicBool::new(true)))
    }
}

/// [`run`], with the end chosen by `until` and the metrics kept in
/// `health`, so a caller in the same process (the demo) can read them.
pub async fn run_with(
    cfg: &Config,
    workers: &[Worker],
    until: Until,
    stop: CancellationToken,
    health: &Health,
) -> Result<(), WorkerError> {
    let health = health.clone();
    let exit_gate = match until {
        Until::Idle(gate) => Some(gate),
        Until::Stopped => None,
    };
    let exit_when_idle = exit_gate.is_some();
    let server = {
        let (h, addr, s) = (
            health.clone(),
            cfg.pipeline.metrics_addr.clone(),
            stop.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = h.serve(&addr, s).await {
                tracing::warn!(error = %e, "metrics endpoint not served");
            }
        })
    };
    let mut set = tokio::task::JoinSet::new();
    let all_in_one = workers.contains(&Worker::Catalog) && workers.contains(&Worker::Ingest);
    if all_in_one {
        // Mastery uses the BKT parameters of the concept, so in the
        // all-in-one run the catalog catches up before ingest starts: a
        // replay then applies the same parameters as the first run.
        spawn(&mut set, Worker::Catalog, cfg, &health, &stop);
        wait_caught_up(
            cfg,
            &[cfg.group(catalog::GROUP)],
            &stop,
            Duration::from_secs(120),
        )
        .await;
    }
    for w in workers {
        if !(all_in_one && *w == Worker::Catalog) {
            spawn(&mut set, *w, cfg, &health, &stop);
        }
    }
    // Only the groups run here count towards "idle": a group nobody runs
    // (the graph's, in an ingest-only run) would never catch up.
    let running: Vec<String> = workers
        .iter()
        .map(|w| cfg.group(w.group().suffix()))
        .collect();
    let idle_watch = exit_gate.map(|gate| {
        let (cfg, stop) = (cfg.clone(), stop.clone());
        let (ingest_group, attempts) = (cfg.group(ingest::GROUP), cfg.topic(Topic::Attempts));
        tokio::spawn(async move {
            let store = novyra_store::Store::new(&cfg.store()).ok();
            let mut idle_rounds = 0;
            while !stop.is_cancelled() {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                let lags = all_lag(&cfg).await.ok();
                let lag_zero = lags.as_ref().is_some_and(|l| {
                    l.iter()
                        .filter(|(g, _)| running.contains(g))
                        .all(|(_, ps)| ps.iter().all(|p| p.lag() == 0))
                });
                // The ingest's authoritative offsets are in Postgres: after
                // a restore they can be behind Kafka's committed ones, and
                // the ingest is not done until it has re-read up to the end.
                let ingest_done = match (&store, &lags) {
                    (Some(s), Some(l)) if running.contains(&ingest_group) => {
                        match s.stored_offsets(&ingest_group, &attempts).await {
                            Ok(stored) => l
                                .iter()
                                .filter(|(g, _)| *g == ingest_group)
                                .flat_map(|(_, ps)| ps.iter())
                                .all(|p| {
                                    stored.get(&p.partition).copied().unwrap_or(p.low) >= p.high
                                }),
                            Err(_) => false,
                        }
                    }
                    _ => true,
                };
                let lag_zero = lag_zero && ingest_done;
                // Without a relay (a replay) nothing drains the outbox.
                let outbox_empty = !cfg.pipeline.relay
                    || match &store {
                        Some(s) => matches!(s.outbox_len().await, Ok(0)),
                        None => false,
                    };
                // A recomputation queued by the catalog is still to come.
                let recomputed = !running.contains(&cfg.group(catalog::GROUP))
                    || match &store {
                        Some(s) => matches!(s.recompute_pending().await, Ok(0)),
                        None => false,
                    };
                let released = gate.load(Ordering::SeqCst);
                idle_rounds = if released && lag_zero && outbox_empty && recomputed {
                    idle_rounds + 1
                } else {
                    0
                };
                if idle_rounds >= 2 {
                    tracing::info!("every group caught up; stopping");
                    stop.cancel();
                }
            }
        })
    });
    let scheduled = (workers.contains(&Worker::Graph)
        && !exit_when_idle
        && cfg.pipeline.reconcile_interval_secs > 0)
        .then(|| {
            let (cfg, stop, health) = (cfg.clone(), stop.clone(), health.clone());
            for (kind, _) in crate::reconcile::Report::default().kinds() {
                health.metrics.reconcile_drift.with_label_values(&[kind]);
            }
            for reason in ["incomplete", "delete_brake", "error", "interrupted"] {
                health.metrics.reconcile_aborted.with_label_values(&[reason]);
            }
            tokio::spawn(async move {
                let every = Duration::from_secs(cfg.pipeline.reconcile_interval_secs);
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(every) => {}
                        _ = stop.cancelled() => return,
                    }
                    let o = crate::reconcile::ReconcileOptions::default();
                    match crate::reconcile::reconcile(&cfg, &o).await {
                        Ok(report) if report.refused => {
                            health.metrics.reconcile_aborted.with_label_values(&["delete_brake"]).inc();
                            tracing::error!(
                                would_delete = report.would_delete,
                                graph_size = report.graph_size,
                                "scheduled reconciliation refused: it would delete more than pipeline.reconcile_max_delete_share of the graph; run `novyra reconcile --dry-run` and, if the deletes are right, `--force`"
                            );
                        }
                        Ok(report) => {
                            for (kind, n) in report.kinds() {
                                health.metrics.reconcile_drift.with_label_values(&[kind]).inc_by(n);
                            }
                        }
                        Err(e) => {
                            let reason = aborted_reason(&e);
                            health.metrics.reconcile_aborted.with_label_values(&[reason]).inc();
                            if reason == "interrupted" {
                                tracing::error!(error = %e, "scheduled reconciliation stopped during its repairs; the next run finishes them");
                            } else {
                                tracing::error!(error = %e, "scheduled reconciliation wrote nothing");
                            }
                        }
                    }
                }
            })
        });
    let mut result = Ok(());
    while let Some(r) = set.join_next().await {
        let r = r
            .map_err(|e| WorkerError::Join(e.to_string()))
            .and_then(|r| r);
        if let Err(e) = r {
            if !matches!(e, WorkerError::Shutdown) {
                tracing::error!(error = %e, "worker failed; stopping the others");
                result = Err(e);
            }
            stop.cancel();
        }
    }
    stop.cancel();
    if let Some(h) = idle_watch {
        let _ = h.await;
    }
    if let Some(h) = scheduled {
        h.abort();
    }
    let _ = server.await;
    result
}

/// Waits until `groups` have zero lag, `timeout` passes, or `stop`.
pub async fn wait_caught_up(
    cfg: &Config,
    wanted: &[String],
    stop: &CancellationToken,
    timeout: Duration,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline && !stop.is_cancelled() {
        if let Ok(lags) = all_lag(cfg).await {
            if lags
                .iter()
                .filter(|(g, _)| wanted.contains(g))
                .all(|(_, ps)| ps.iter().all(|p| p.lag() == 0))
            {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_failure_during_the_repairs_is_reported_as_having_written() {
        let interrupted = WorkerError::RepairInterrupted(Box::new(WorkerError::PollThread));
        assert_eq!(aborted_reason(&interrupted), "interrupted");
        assert!(
            interrupted
                .to_string()
                .contains("any written before the failure stay"),
            "{interrupted}"
        );
        assert_eq!(
            aborted_reason(&WorkerError::Incomplete("a poison record".into())),
            "incomplete"
        );
        assert_eq!(aborted_reason(&WorkerError::PollThread), "error");
    }
}
