//! `make bench`: how fast the ingest path is on this machine, measured
//! against real servers, next to a one-row-at-a-time baseline and to the
//! ceiling of binary `COPY` into the same table (`ceiling.rs`), all in the
//! same run.
//!
//! For each worker (the real `novyra ingest`, then the baseline) it uses a
//! fresh topic prefix and database schema, and measures:
//! - sustained throughput: attempts preloaded on the topic, the worker
//!   started, committed records counted from the worker's own metrics from
//!   its first commit to its last (group join time excluded);
//! - end-to-end latency at a fixed offered rate: Kafka create time to the
//!   Postgres commit, from the worker's `novyra_end_to_end_latency_seconds`
//!   histogram (25% buckets, interpolated);
//! - peak RSS of the worker process (`VmHWM`);
//! - `novyra replay` of the throughput run's topics (`measure.rs`), and
//!   the graph freshness of a whole `novyra run` (`freshness.rs`).

mod baseline;
mod ceiling;
mod freshness;
mod graph;
mod measure;
mod metrics;
mod reconcile;
mod scale;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use novyra_pipeline::{CancellationToken, Config};

#[derive(Parser)]
#[command(
    version,
    about = "Ingest benchmark against a one-row-at-a-time baseline"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
    #[command(flatten)]
    opts: measure::Options,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the baseline consumer (started by the benchmark itself).
    #[command(hide = true)]
    BaselineWorker,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cfg = Config::load(None)?;
    match cli.cmd {
        Some(Cmd::BaselineWorker) => {
            let stop = CancellationToken::new();
            let s = stop.clone();
            tokio::spawn(async move {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = async { if let Some(t) = term.as_mut() { t.recv().await; } } => {}
                }
                s.cancel();
            });
            baseline::run(&cfg, stop).await
        }
        None => {
            let novyra = sibling("novyra")?;
            let me = std::env::current_exe()?;
            measure::run(&cfg, &cli.opts, &novyra, &me).await
        }
    }
}

/// A binary built next to this one (`make bench` builds both).
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe()?;
    let path = me.with_file_name(name);
    anyhow::ensure!(
        path.exists(),
        "{} not found: build it first (make bench does)",
        path.display()
    );
    Ok(path)
}
