//! The measuring harness: fresh prefixes, preloaded topics, worker
//! processes, metric scraping, and the report.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use novyra_pipeline::loadgen::{self, LoadgenOptions};
use novyra_pipeline::Config;
use novyra_registry::Codec;

use crate::metrics::{histogram_delta, quantile, scrape, Metrics};

/// What to run.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Attempts preloaded for the real ingest's throughput run.
    #[arg(long, default_value_t = 500_000)]
    attempts: usize,
    /// Students (attempt keys).
    #[arg(long, default_value_t = 20_000)]
    users: usize,
    /// Concepts.
    #[arg(long, default_value_t = 500)]
    concepts: usize,
    /// Offered rate of the latency runs, attempts per second.
    #[arg(long, default_value_t = 5_000)]
    pub(crate) rate: u64,
    /// Length of the real ingest's latency run, seconds.
    #[arg(long, default_value_t = 30)]
    pub(crate) latency_secs: u64,
    /// Attempts preloaded for the baseline's throughput run (it is slow).
    #[arg(long, default_value_t = 20_000)]
    baseline_attempts: usize,
    /// Length of the baseline's latency run, seconds (it never keeps up,
    /// so its backlog drains after the run).
    #[arg(long, default_value_t = 10)]
    baseline_latency_secs: u64,
    /// Keep the benchmark's topics and schemas instead of dropping them.
    #[arg(long)]
    pub(crate) keep: bool,
    /// Run only this part (all by default).
    #[arg(long, value_enum)]
    only: Option<Part>,
    #[command(flatten)]
    pub(crate) graph: crate::graph::GraphOptions,
    #[command(flatten)]
    pub(crate) reconcile: crate::reconcile::ReconcileOptions,
    #[command(flatten)]
    pub(crate) scale: crate::scale::ScaleOptions,
}

/// The benchmark's parts.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq)]
enum Part {
    /// Attempts into Postgres.
    Ingest,
    /// Mastery edges into Neo4j, and reconcile.
    Graph,
    /// Graph freshness with every group in one `novyra run`.
    Freshness,
    /// Reconcile's time and memory over millions of edges.
    Reconcile,
    /// `make bench-scale`: ten million attempts through `novyra run`
    /// (never part of the default run: it takes about 20 minutes).
    Scale,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Worker {
    Ingest,
    Baseline,
    Graph,
    Pipeline,
}

impl Worker {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Worker::Ingest => "novyra ingest",
            Worker::Baseline => "baseline (1 row per tx)",
            Worker::Graph => "novyra graph",
            Worker::Pipeline => "novyra run",
        }
    }
    pub(crate) fn group_suffix(self) -> &'static str {
        match self {
            Worker::Ingest => novyra_pipeline::ingest::GROUP,
            Worker::Baseline => crate::baseline::GROUP,
            Worker::Graph => novyra_pipeline::graph_sink::GROUP,
            Worker::Pipeline => novyra_pipeline::ingest::GROUP,
        }
    }
}

#[derive(Debug, Default, Clone)]
struct Figures {
    attempts: u64,
    seconds: f64,
    throughput: f64,
    latency_n: u64,
    p50: f64,
    p95: f64,
    p99: f64,
    rss_mib: f64,
    /// `novyra replay` of the throughput run's topic: (attempts/s between
    /// its first and last commit, wall seconds of the whole command).
    replay: Option<(f64, f64)>,
}

/// The ingest's end-to-end latency histogram.
const E2E: &str = "novyra_end_to_end_latency_seconds";

/// Runs the selected parts and prints their reports.
pub async fn run(cfg: &Config, o: &Options, novyra: &Path, me: &Path) -> anyhow::Result<()> {
    let stamp = format!("bench{}", chrono::Utc::now().format("%m%d%H%M%S"));
    println!("{}", machine());
    if o.only.is_none_or(|p| p == Part::Ingest) {
        ingest(cfg, o, novyra, me, &stamp).await?;
    }
    if o.only.is_none_or(|p| p == Part::Graph) {
        crate::graph::run(cfg, o, novyra, me, &stamp).await?;
    }
    if o.only.is_none_or(|p| p == Part::Freshness) {
        crate::freshness::run(cfg, o, novyra, me, &stamp).await?;
    }
    if o.only.is_none_or(|p| p == Part::Reconcile) {
        crate::reconcile::run(cfg, o, novyra, me, &stamp).await?;
    }
    if o.only == Some(Part::Scale) {
        crate::scale::run(cfg, o, novyra, me, &stamp).await?;
    }
    Ok(())
}

/// The ingest against the one-row-per-transaction baseline.
async fn ingest(
    cfg: &Config,
    o: &Options,
    novyra: &Path,
    me: &Path,
    stamp: &str,
) -> anyhow::Result<()> {
    // The ceiling first, on the same load as the worker's throughput run.
    let ceiling = {
        let cfg = prefixed(cfg, &format!("{stamp}c"));
        eprintln!("[bench] ceiling: binary COPY of {} attempts", o.attempts);
        let c = crate::ceiling::measure(&cfg, &load(&cfg, o, o.attempts, 0, "t")).await;
        if !o.keep {
            if let Err(e) = novyra_store::drop_schema(&cfg.migrate_store()).await {
                eprintln!("[bench] could not drop schema: {e}");
            }
        }
        c?
    };
    eprintln!(
        "[bench] ceiling: {:.0} rows/s over {:.1} s",
        ceiling.rate(),
        ceiling.seconds
    );
    let mut rows = Vec::new();
    for w in [Worker::Ingest, Worker::Baseline] {
        let f = measure(cfg, o, w, stamp, novyra, me).await?;
        rows.push((w, f));
    }
    println!();
    println!(
        "| worker | attempts | seconds | attempts/s | latency n @ {}/s | p50 ms | p95 ms | p99 ms | peak RSS MiB |",
        o.rate
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (w, f) in &rows {
        println!(
            "| {} | {} | {:.1} | {:.0} | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            w.label(),
            f.attempts,
            f.seconds,
            f.throughput,
            f.latency_n,
            f.p50 * 1e3,
            f.p95 * 1e3,
            f.p99 * 1e3,
            f.rss_mib
        );
    }
    let (i, b) = (&rows[0].1, &rows[1].1);
    if let Some((rate, wall)) = i.replay {
        println!(
            "| novyra replay (Postgres rebuilt from the topics) | {} | {wall:.1} | {rate:.0} | — | — | — | — | — |",
            i.attempts
        );
    }
    println!(
        "| ceiling: binary COPY into concept_attempts | {} | {:.1} | {:.0} | — | — | — | — | — |",
        ceiling.rows,
        ceiling.seconds,
        ceiling.rate()
    );
    println!();
    println!(
        "ingest at {:.0}% of the COPY ceiling ({:.0} of {:.0} rows/s; target >= 50%)",
        100.0 * i.throughput / ceiling.rate().max(f64::MIN_POSITIVE),
        i.throughput,
        ceiling.rate()
    );
    if let Some((rate, _)) = i.replay {
        println!(
            "replay at {:.0}% of the live ingest ({rate:.0} of {:.0} attempts/s)",
            100.0 * rate / i.throughput.max(f64::MIN_POSITIVE),
            i.throughput
        );
    }
    println!(
        "speed-up over the baseline: {:.1}x (target >= 20x); ingest {:.0}/s (target >= 30000/s); p99 {:.0} ms at {}/s (target < 500 ms)",
        i.throughput / b.throughput.max(f64::MIN_POSITIVE),
        i.throughput,
        i.p99 * 1e3,
        o.rate
    );
    Ok(())
}

/// Rebuilds the throughput run's Postgres schema from its topics with
/// `novyra replay`; returns the rate it prints and its wall time (schema
/// creation and group joins included). Not `--verify`: the measured ingest
/// ran without the catalog, so the replay's mastery (with the concepts'
/// parameters) rightly differs from it; the replay tests check equality.
async fn replay(cfg: &Config, novyra: &Path, keep: bool) -> anyhow::Result<(f64, f64)> {
    let schema = format!("{}r", cfg.database.schema.as_deref().unwrap_or("bench"));
    eprintln!("[bench] novyra replay into schema {schema}");
    let started = Instant::now();
    let out = pointed_at(&mut Command::new(novyra), cfg)
        .args(["replay", "--schema", &schema])
        .stderr(Stdio::inherit())
        .output()
        .context("running novyra replay")?;
    let wall = started.elapsed().as_secs_f64();
    let text = String::from_utf8_lossy(&out.stdout);
    if !keep {
        let mut target = cfg.clone();
        target.database.schema = Some(schema.clone());
        if let Err(e) = novyra_store::drop_schema(&target.migrate_store()).await {
            eprintln!("[bench] could not drop schema {schema}: {e}");
        }
    }
    if !out.status.success() {
        bail!("novyra replay failed ({}):\n{text}", out.status);
    }
    let rate = text
        .lines()
        .find_map(|l| l.strip_prefix("replay rate: "))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|r| r.parse::<f64>().ok())
        .with_context(|| format!("no replay rate in its output:\n{text}"))?;
    eprintln!("[bench] replay: {rate:.0} attempts/s, {wall:.1} s in all");
    Ok((rate, wall))
}

pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0 / 1024.0);
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("machine: {cores} cores ({cpu}), {mem:.0} GiB; commit {commit}")
}

async fn measure(
    base: &Config,
    o: &Options,
    w: Worker,
    stamp: &str,
    novyra: &Path,
    me: &Path,
) -> anyhow::Result<Figures> {
    let (n, secs, tag) = match w {
        Worker::Ingest => (o.attempts, o.latency_secs, "i"),
        Worker::Baseline => (o.baseline_attempts, o.baseline_latency_secs, "b"),
        Worker::Graph | Worker::Pipeline => {
            anyhow::bail!("measured by the graph and freshness parts")
        }
    };
    let mut f = Figures::default();

    // Throughput: everything preloaded, the worker started cold.
    let cfg = prefixed(base, &format!("{stamp}{tag}t"));
    setup(&cfg).await?;
    eprintln!("[bench] {}: preloading {n} attempts", w.label());
    publish(&cfg, o, n, 0, "t").await?;
    let mut child = Worker::spawn(w, &cfg, novyra, me)?;
    let group = cfg.group(w.group_suffix());
    let (seconds, throughput) =
        drain(&mut child, w, &cfg.pipeline.metrics_addr, &group, n as f64).await?;
    f.attempts = n as u64;
    f.seconds = seconds;
    f.throughput = throughput;
    let rss1 = peak_rss_mib(&child);
    drop(child);
    eprintln!(
        "[bench] {}: {:.0} attempts/s over {:.1} s",
        w.label(),
        f.throughput,
        f.seconds
    );
    if w == Worker::Ingest {
        f.replay = Some(replay(&cfg, novyra, o.keep).await?);
    }
    cleanup(&cfg, o.keep).await;

    // Latency at a fixed offered rate, the worker already warm.
    let cfg = prefixed(base, &format!("{stamp}{tag}l"));
    setup(&cfg).await?;
    let mut child = Worker::spawn(w, &cfg, novyra, me)?;
    let group = cfg.group(w.group_suffix());
    let addr = cfg.pipeline.metrics_addr.clone();
    let warm = 2_000usize;
    publish(&cfg, o, warm, 0, "w").await?;
    wait_committed(
        &mut child,
        w,
        &addr,
        &group,
        warm as f64,
        Duration::from_secs(120),
    )
    .await?;
    let before = scrape(&addr).await?;
    let paced = (o.rate * secs) as usize;
    eprintln!(
        "[bench] {}: offering {} attempts/s for {secs} s",
        w.label(),
        o.rate
    );
    publish(&cfg, o, paced, o.rate, "l").await?;
    wait_committed(
        &mut child,
        w,
        &addr,
        &group,
        (warm + paced) as f64,
        Duration::from_secs(300 + paced as u64 / 200),
    )
    .await?;
    let after = scrape(&addr).await?;
    let hist = histogram_delta(&before, &after, E2E, &group);
    f.latency_n = hist.last().map_or(0, |b| b.1 as u64);
    f.p50 = quantile(&hist, 0.50);
    f.p95 = quantile(&hist, 0.95);
    f.p99 = quantile(&hist, 0.99);
    f.rss_mib = rss1.max(peak_rss_mib(&child));
    drop(child);
    cleanup(&cfg, o.keep).await;
    Ok(f)
}

/// Waits until `group` has committed `n` records and returns the seconds
/// from its first commit to its last and the records/s between them (the
/// group join and the first fetch are excluded).
pub(crate) async fn drain(
    child: &mut Child,
    w: Worker,
    addr: &str,
    group: &str,
    n: f64,
) -> anyhow::Result<(f64, f64)> {
    let timeout = Duration::from_secs(120 + n as u64 / 100);
    let started = Instant::now();
    let mut first: Option<(Instant, f64)> = None;
    let mut last = (Instant::now(), 0.0);
    loop {
        check_alive(child, w)?;
        if started.elapsed() > timeout {
            bail!(
                "{}: only {} of {n} committed after {timeout:?}",
                w.label(),
                last.1
            );
        }
        let c = scrape(addr)
            .await
            .map(|m| committed(&m, group))
            .unwrap_or(0.0);
        let now = Instant::now();
        if c > 0.0 && first.is_none() {
            first = Some((now, c));
        }
        last = (now, c);
        if c >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (t0, c0) = first.unwrap_or((started, 0.0));
    let seconds = last.0.duration_since(t0).as_secs_f64();
    Ok((seconds, (last.1 - c0) / seconds.max(1e-3)))
}

impl Worker {
    pub(crate) fn spawn(self, cfg: &Config, novyra: &Path, me: &Path) -> anyhow::Result<Running> {
        let log = std::env::temp_dir().join(format!(
            "{}-{}.log",
            cfg.topic_prefix.trim_end_matches('.'),
            self.group_suffix()
        ));
        let mut cmd = match self {
            Worker::Ingest => {
                let mut c = Command::new(novyra);
                c.arg("ingest");
                c
            }
            Worker::Baseline => {
                let mut c = Command::new(me);
                c.arg("baseline-worker");
                c
            }
            Worker::Graph => {
                let mut c = Command::new(novyra);
                c.arg("graph");
                c
            }
            Worker::Pipeline => {
                let mut c = Command::new(novyra);
                c.arg("run");
                c
            }
        };
        pointed_at(&mut cmd, cfg)
            .env("NOVYRA_METRICS_ADDR", &cfg.pipeline.metrics_addr)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?);
        cmd.spawn()
            .map(|c| Running(Some(c)))
            .with_context(|| format!("starting {}", self.label()))
    }
}

/// `cmd` (a `novyra` or bench process) pointed at `cfg`'s topics and
/// schema, logging warnings only; the rest of the config comes from the
/// environment it inherits.
pub(crate) fn pointed_at<'c>(cmd: &'c mut Command, cfg: &Config) -> &'c mut Command {
    cmd.env("NOVYRA_TOPIC_PREFIX", &cfg.topic_prefix)
        .env(
            "NOVYRA_DB_SCHEMA",
            cfg.database.schema.as_deref().unwrap_or(""),
        )
        .env("RUST_LOG", "warn")
}

pub(crate) fn prefixed(base: &Config, name: &str) -> Config {
    let mut cfg = base.clone();
    cfg.topic_prefix = format!("{name}.");
    cfg.database.schema = Some(name.to_owned());
    cfg.pipeline.metrics_addr = format!("127.0.0.1:{}", free_port());
    cfg
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(9499, |a| a.port())
}

pub(crate) async fn setup(cfg: &Config) -> anyhow::Result<()> {
    novyra_store::migrate(&cfg.migrate_store()).await?;
    novyra_kafka::topics::ensure(
        &cfg.kafka(),
        &cfg.topic_prefix,
        &novyra_kafka::topics::pipeline_topics(-1),
        cfg.kafka.replication_factor,
    )
    .await?;
    Codec::new(&cfg.registry())?
        .register_all(&cfg.topic_prefix)
        .await?;
    Ok(())
}

/// The prefix of the ids a part generates under `cfg` (`<prefix>-`).
pub(crate) fn id_prefix(cfg: &Config) -> String {
    format!("{}-", cfg.topic_prefix.trim_end_matches('.'))
}

/// [`cleanup`] for a part that also wrote to Neo4j: its nodes and their
/// edges go first, both those it generated itself ([`id_prefix`]) and
/// those of [`load`] (ids starting with the topic prefix). A failure to
/// reach Neo4j is said and the topics and schema are still dropped.
pub(crate) async fn cleanup_with_graph(cfg: &Config, keep: bool) {
    if !keep {
        eprintln!("[bench] deleting the benchmark's graph");
        match cfg.graph() {
            Ok(graph) => {
                for p in [id_prefix(cfg), cfg.topic_prefix.clone()] {
                    if let Err(e) = graph.delete_prefixed(&p).await {
                        eprintln!("[bench] could not delete the benchmark's graph nodes: {e}");
                    }
                }
            }
            Err(e) => {
                eprintln!("[bench] could not reach Neo4j to delete the benchmark's graph: {e}")
            }
        }
    }
    cleanup(cfg, keep).await;
}

pub(crate) async fn cleanup(cfg: &Config, keep: bool) {
    if keep {
        return;
    }
    if let Err(e) = novyra_store::drop_schema(&cfg.migrate_store()).await {
        eprintln!("[bench] could not drop schema: {e}");
    }
    if let Err(e) = novyra_kafka::topics::delete(
        &cfg.kafka(),
        &cfg.topic_prefix,
        &novyra_kafka::topics::pipeline_topics(-1),
    )
    .await
    {
        eprintln!("[bench] could not delete topics: {e}");
    }
}

/// The load of one run: the same students, concepts and spread in time
/// for every worker and the ceiling.
pub(crate) fn load(cfg: &Config, o: &Options, n: usize, rate: u64, run: &str) -> LoadgenOptions {
    LoadgenOptions {
        concepts: o.concepts,
        domains: 10,
        students: o.users,
        attempts: n,
        seed: 42,
        rate,
        days: 75,
        id_prefix: format!("{}{run}-", cfg.topic_prefix),
    }
}

async fn publish(cfg: &Config, o: &Options, n: usize, rate: u64, run: &str) -> anyhow::Result<()> {
    loadgen::generate_and_publish(cfg, &load(cfg, o, n, rate, run), true).await?;
    Ok(())
}

pub(crate) async fn wait_committed(
    child: &mut Child,
    w: Worker,
    addr: &str,
    group: &str,
    n: f64,
    timeout: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    loop {
        check_alive(child, w)?;
        let c = scrape(addr)
            .await
            .map(|m| committed(&m, group))
            .unwrap_or(0.0);
        if c >= n {
            return Ok(());
        }
        if started.elapsed() > timeout {
            bail!("{}: {c} of {n} committed after {timeout:?}", w.label());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn check_alive(child: &mut Child, w: Worker) -> anyhow::Result<()> {
    if let Some(status) = child.try_wait()? {
        bail!(
            "{} exited early: {status} (see its log in the temp dir)",
            w.label()
        );
    }
    Ok(())
}

/// A worker process, stopped ([`stop`]) when dropped: a measurement that
/// fails half-way must not leave its worker consuming the CPU the next one
/// is measured on.
pub(crate) struct Running(Option<Child>);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        self.0.as_ref().expect("a running worker until dropped")
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        self.0.as_mut().expect("a running worker until dropped")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            stop(c);
        }
    }
}

/// SIGTERM, then SIGKILL after 10 s.
pub(crate) fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The process's peak resident memory (`VmHWM`).
pub(crate) fn peak_rss_mib(child: &Child) -> f64 {
    status_mib(child, "VmHWM:")
}

/// The process's resident memory now (`VmRSS`).
pub(crate) fn rss_mib(child: &Child) -> f64 {
    status_mib(child, "VmRSS:")
}

/// A kB field of `/proc/<pid>/status`, in MiB (0 once the process is gone).
fn status_mib(child: &Child, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn committed(m: &Metrics, group: &str) -> f64 {
    m.value("novyra_consumer_records_committed_total", group)
}
