//! `novyra`: one thin binary over the pipeline crates. Every worker, the
//! all-in-one dev run, migrations, topics and schemas, producing and load
//! generation, lag, and graph queries.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use novyra_core::{keys, ConceptAttempted, ConceptUpserted, MasteryUpdated, PrerequisiteLinked};
use novyra_pipeline::loadgen::{self, LoadgenOptions};
use novyra_pipeline::run::{self, Worker};
use novyra_pipeline::{CancellationToken, Config};
use novyra_registry::{Codec, EventKind};

mod backup;
mod dlq;
mod lag;
mod replay;
mod tail;

#[derive(Parser)]
#[command(
    name = "novyra",
    version,
    about = "NOVYRA Stream: learning events from Kafka into PostgreSQL and Neo4j"
)]
struct Cli {
    /// TOML config file; environment variables override it.
    #[arg(long, global = true, env = "NOVYRA_CONFIG")]
    config: Option<PathBuf>,
    /// Log as JSON lines instead of human-readable text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every consumer group in one process (dev / all-in-one).
    Run {
        /// Return once every group has caught up.
        #[arg(long)]
        exit_when_idle: bool,
    },
    /// Run the novyra-ingest group (attempts → Postgres) and the outbox relay.
    Ingest,
    /// Run the novyra-catalog group (concepts, prerequisites → Postgres).
    Catalog,
    /// Run the novyra-graph group (→ Neo4j), or query the graph.
    Graph {
        #[command(subcommand)]
        query: Option<GraphCmd>,
    },
    /// Database maintenance.
    Db {
        #[command(subcommand)]
        cmd: DbCmd,
    },
    /// Create the pipeline's topics (partitions and cleanup policies per DESIGN.md).
    Topics,
    /// Register the Avro schemas (subject `<topic>-value`, BACKWARD).
    Schemas,
    /// Publish events given as JSON lines (stdin or a file).
    Produce {
        /// Topic kind: attempts, concepts, prerequisites or mastery.
        #[arg(long)]
        topic: String,
        /// File of JSON lines; stdin if absent.
        file: Option<PathBuf>,
        /// Publish a tombstone for this key instead (repeatable): deletes a
        /// concept (`id`), unlinks (`pre>concept`) or resets mastery (`user/concept`).
        #[arg(long = "delete", value_name = "KEY", conflicts_with = "file")]
        delete: Vec<String>,
    },
    /// Generate a curriculum and simulated students, and publish their attempts.
    Loadgen(LoadgenArgs),
    /// Repair drift: the compacted topics are the truth for Neo4j, Postgres
    /// for the mastery topic.
    Reconcile {
        /// Report the drift without repairing it.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Only ids starting with this (a graph shared by several pipelines).
        #[arg(long, default_value = "")]
        id_prefix: String,
        /// Repair even if that deletes more than
        /// `pipeline.reconcile_max_delete_share` of the graph (default 5%);
        /// without it such a run writes nothing and exits 3.
        #[arg(long)]
        force: bool,
    },
    /// Consumer-group lag per partition: offsets, records, seconds, owner;
    /// exit code 3 above a threshold.
    Lag(lag::LagArgs),
    /// Print a topic's records decoded (JSON lines or a table); never joins
    /// a group or commits.
    Tail(tail::TailArgs),
    /// Rewind a consumer group to the start of its topics (the catalog
    /// after a Postgres restore: it re-applies the compacted topics). The
    /// group's workers must be stopped.
    Rewind {
        /// Group suffix: catalog or graph.
        #[arg(long)]
        group: String,
    },
    /// Rebuild Postgres (into an empty schema) and/or Neo4j from the topics,
    /// with progress; --verify compares with the live tables (exit 3 if not equal).
    Replay(replay::ReplayArgs),
    /// Dead letters: list them, or replay chosen ones to their source topic.
    Dlq {
        #[command(subcommand)]
        cmd: dlq::DlqCmd,
    },
    /// Print the pipeline summary and run the consistency checks.
    Summary {
        /// Number of attempts produced, to check against the rows stored.
        #[arg(long)]
        expect_attempts: Option<usize>,
    },
    /// The whole demo: topics, schemas, generated data, run until idle, summary.
    Demo(LoadgenArgs),
}

#[derive(Subcommand)]
enum GraphCmd {
    /// Concepts a user can learn next (prerequisites mastered, itself not).
    Next {
        /// User id.
        #[arg(long)]
        user: String,
        /// How many.
        #[arg(long, default_value_t = 10)]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// What a user still has to learn to reach a concept, prerequisites first.
    Path {
        /// User id.
        #[arg(long)]
        user: String,
        /// Target concept id.
        #[arg(long)]
        target: String,
        /// Longest prerequisite chain followed (at most 32).
        #[arg(long, default_value_t = 8)]
        max_hops: u32,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Attempted, not mastered concepts that other concepts depend on.
    Weak {
        /// User id.
        #[arg(long)]
        user: String,
        /// How many.
        #[arg(long, default_value_t = 10)]
        limit: i64,
        /// Print JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Export the graph as JSON lines (logical backup) and print a checksum.
    Export {
        /// Output file; `-` for stdout.
        #[arg(long)]
        out: PathBuf,
        /// Only ids starting with this.
        #[arg(long, default_value = "")]
        id_prefix: String,
    },
    /// Import an export (idempotent MERGEs; newer mastery edges are kept).
    Import {
        /// The export file.
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum DbCmd {
    /// Apply pending migrations (as the migration role).
    Migrate,
    /// List attempt partitions with row counts (DEFAULT included); optionally
    /// create months ahead or detach old months first.
    Partitions {
        /// Create the current month's partition and this many after it.
        #[arg(long, value_name = "MONTHS")]
        ensure_ahead: Option<u32>,
        /// Detach month partitions that end on or before this date (YYYY-MM-DD);
        /// the tables stay for archiving. Runs as the migration role.
        #[arg(long, value_name = "DATE")]
        detach_before: Option<chrono::NaiveDate>,
    },
    /// Refresh the analysts' leaderboard now (the ingest does it every
    /// pipeline.leaderboard_refresh_secs).
    RefreshLeaderboard,
}

#[derive(Args, Clone)]
struct LoadgenArgs {
    /// Concepts in the curriculum.
    #[arg(long, default_value_t = 60)]
    concepts: usize,
    /// Domains.
    #[arg(long, default_value_t = 6)]
    domains: usize,
    /// Students.
    #[arg(long, default_value_t = 250)]
    students: usize,
    /// Attempts in total.
    #[arg(long, default_value_t = 25_000)]
    attempts: usize,
    /// RNG seed (same seed, same data).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Attempts per second (0 = as fast as possible).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Spread attempts over this many days up to now.
    #[arg(long, default_value_t = 75)]
    days: i64,
    /// Prefix for generated ids (default: a fresh run id, so runs never collide).
    #[arg(long)]
    id_prefix: Option<String>,
}

impl LoadgenArgs {
    fn options(&self) -> LoadgenOptions {
        LoadgenOptions {
            concepts: self.concepts,
            domains: self.domains,
            students: self.students,
            attempts: self.attempts,
            seed: self.seed,
            rate: self.rate,
            days: self.days,
            id_prefix: self
                .id_prefix
                .clone()
                .unwrap_or_else(|| format!("r{}-", chrono::Utc::now().format("%m%d%H%M%S"))),
        }
    }
}

fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,rdkafka=warn".into());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

fn shutdown_token() -> CancellationToken {
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => return,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::info!("shutdown requested; finishing the in-flight batch");
        s.cancel();
    });
    stop
}

async fn setup(cfg: &Config) -> Result<()> {
    let created = novyra_kafka::topics::ensure(
        &cfg.kafka(),
        &cfg.topic_prefix,
        &novyra_kafka::topics::pipeline_topics(cfg.kafka.attempts_retention_ms),
        cfg.kafka.replication_factor,
    )
    .await
    .context("creating topics")?;
    tracing::info!(created = ?created, "topics ready");
    let codec = Codec::new(&cfg.registry())?;
    for (subject, id) in codec
        .register_all(&cfg.topic_prefix)
        .await
        .context("registering schemas")?
    {
        tracing::info!(subject, id, "schema ready");
    }
    Ok(())
}

async fn produce(cfg: &Config, topic: &str, file: Option<PathBuf>) -> Result<()> {
    let kind = EventKind::from_topic(&cfg.topic_prefix, topic)
        .with_context(|| format!("unknown topic kind {topic:?}"))?;
    let reader: Box<dyn BufRead> = match file {
        Some(p) => Box::new(std::io::BufReader::new(
            std::fs::File::open(&p).with_context(|| format!("opening {}", p.display()))?,
        )),
        None => Box::new(std::io::stdin().lock()),
    };
    let lines: Vec<String> = reader.lines().collect::<Result<_, _>>()?;
    let lines: Vec<(usize, &String)> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .collect();
    let codec = Codec::new(&cfg.registry())?;
    let producer = cfg.kafka().producer()?;
    let t = kind.topic(&cfg.topic_prefix);
    macro_rules! go {
        ($ty:ty, $key:expr) => {{
            let items: Vec<(String, $ty)> = lines
                .iter()
                .map(|(i, l)| {
                    let v: $ty = serde_json::from_str(l).with_context(|| {
                        format!("line {}: not a valid {}", i + 1, stringify!($ty))
                    })?;
                    Ok(($key(&v), v))
                })
                .collect::<Result<_>>()?;
            loadgen::publish(&codec, &producer, &t, kind, &items, 0, true).await?
        }};
    }
    let n = match kind {
        EventKind::Attempt => go!(ConceptAttempted, |v: &ConceptAttempted| v.user_id.clone()),
        EventKind::Concept => go!(ConceptUpserted, |v: &ConceptUpserted| v.concept_id.clone()),
        EventKind::Prerequisite => go!(PrerequisiteLinked, |v: &PrerequisiteLinked| {
            keys::prerequisite_key(&v.prerequisite_id, &v.concept_id)
        }),
        EventKind::Mastery => go!(MasteryUpdated, |v: &MasteryUpdated| keys::mastery_key(
            &v.user_id,
            &v.concept_id
        )),
    };
    println!("published {n} events to {t}");
    Ok(())
}

async fn tombstones(cfg: &Config, topic: &str, keys_: &[String]) -> Result<()> {
    let kind = EventKind::from_topic(&cfg.topic_prefix, topic)
        .with_context(|| format!("unknown topic kind {topic:?}"))?;
    let valid = |k: &str| match kind {
        EventKind::Attempt => false,
        EventKind::Concept => !k.is_empty(),
        EventKind::Prerequisite => keys::parse_prerequisite_key(k).is_some(),
        EventKind::Mastery => keys::parse_mastery_key(k).is_some(),
    };
    if let Some(bad) = keys_.iter().find(|k| !valid(k)) {
        bail!(
            "{bad:?} is not a key that can be deleted on the {} topic",
            kind.topic_suffix()
        );
    }
    let producer = cfg.kafka().producer()?;
    let t = kind.topic(&cfg.topic_prefix);
    for k in keys_ {
        producer
            .send(
                novyra_kafka::rdkafka::producer::FutureRecord::<str, [u8]>::to(&t).key(k.as_str()),
                std::time::Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .with_context(|| format!("publishing tombstone {k:?}"))?;
    }
    println!("published {} tombstone(s) to {t}", keys_.len());
    Ok(())
}

/// Exit code of a reconciliation the delete brake refused.
const RECONCILE_REFUSED: u8 = 3;

#[tokio::main]
async fn main() -> Result<ExitCode> {
    let cli = Cli::parse();
    init_logs(cli.log_json);
    let cfg = Config::load(cli.config.as_deref()).context("configuration")?;
    match cli.cmd {
        Cmd::Run { exit_when_idle } => {
            run::run(
                &cfg,
                &[Worker::Catalog, Worker::Ingest, Worker::Graph],
                exit_when_idle,
                shutdown_token(),
            )
            .await?
        }
        Cmd::Ingest => run::run(&cfg, &[Worker::Ingest], false, shutdown_token()).await?,
        Cmd::Catalog => run::run(&cfg, &[Worker::Catalog], false, shutdown_token()).await?,
        Cmd::Graph { query: None } => {
            run::run(&cfg, &[Worker::Graph], false, shutdown_token()).await?
        }
        Cmd::Graph {
            query: Some(GraphCmd::Export { out, id_prefix }),
        } => backup::export(&cfg, &out, &id_prefix).await?,
        Cmd::Graph {
            query: Some(GraphCmd::Import { file }),
        } => backup::import(&cfg, &file).await?,
        Cmd::Graph {
            query: Some(GraphCmd::Next { user, limit, json }),
        } => {
            let g = cfg.graph()?;
            let next = g
                .next_concepts(&user, cfg.pipeline.mastery_threshold, limit)
                .await?;
            for c in next {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"id": c.id, "name": c.name, "score": c.score, "prerequisites": c.prerequisites})
                    );
                } else {
                    println!(
                        "{:<14} {:<24} score {:.3}  prerequisites {}",
                        c.id, c.name, c.score, c.prerequisites
                    );
                }
            }
        }
        Cmd::Graph {
            query:
                Some(GraphCmd::Path {
                    user,
                    target,
                    max_hops,
                    json,
                }),
        } => {
            let g = cfg.graph()?;
            let steps = g
                .learning_path(&user, &target, cfg.pipeline.mastery_threshold, max_hops)
                .await?;
            if !json {
                println!(
                    "{:<4} {:<24} {:<28} {:>6} {:>5}",
                    "step", "concept", "name", "score", "hops"
                );
            }
            for (i, s) in steps.iter().enumerate() {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"step": i + 1, "id": s.id, "name": s.name, "score": s.score, "hops": s.hops})
                    );
                } else {
                    println!(
                        "{:<4} {:<24} {:<28} {:>6.3} {:>5}",
                        i + 1,
                        s.id,
                        s.name,
                        s.score,
                        s.hops
                    );
                }
            }
        }
        Cmd::Graph {
            query: Some(GraphCmd::Weak { user, limit, json }),
        } => {
            let g = cfg.graph()?;
            let weak = g
                .weak_concepts(&user, cfg.pipeline.mastery_threshold, limit)
                .await?;
            if !json {
                println!(
                    "{:<24} {:<28} {:>6} {:>10} {:>9}",
                    "concept", "name", "score", "dependents", "attempted"
                );
            }
            for w in weak {
                if json {
                    println!(
                        "{}",
                        serde_json::json!({"id": w.id, "name": w.name, "score": w.score, "dependents": w.dependents, "attempted_dependents": w.attempted_dependents})
                    );
                } else {
                    println!(
                        "{:<24} {:<28} {:>6.3} {:>10} {:>9}",
                        w.id, w.name, w.score, w.dependents, w.attempted_dependents
                    );
                }
            }
        }
        Cmd::Db {
            cmd: DbCmd::RefreshLeaderboard,
        } => {
            novyra_store::Store::new(&cfg.store())?
                .refresh_leaderboard()
                .await?;
            println!("leaderboard refreshed");
        }
        Cmd::Db {
            cmd: DbCmd::Migrate,
        } => {
            let done = novyra_store::migrate(&cfg.migrate_store()).await?;
            println!("applied {} migration(s)", done.len());
        }
        Cmd::Db {
            cmd:
                DbCmd::Partitions {
                    ensure_ahead,
                    detach_before,
                },
        } => {
            let store = novyra_store::Store::new(&cfg.store())?;
            if let Some(n) = ensure_ahead {
                let today = chrono::Utc::now().date_naive();
                for m in store.ensure_months_ahead(today, n).await? {
                    println!(
                        "month {m} stays in the default partition (it already holds rows of it)"
                    );
                }
            }
            if let Some(cutoff) = detach_before {
                let owner = novyra_store::Store::new(&cfg.migrate_store())?;
                for name in owner.detach_partitions_before(cutoff).await? {
                    println!("detached {name}");
                }
            }
            for (name, rows) in store.attempt_partitions().await? {
                println!("{name:<32} {rows:>10}");
            }
        }
        Cmd::Topics => {
            let created = novyra_kafka::topics::ensure(
                &cfg.kafka(),
                &cfg.topic_prefix,
                &novyra_kafka::topics::pipeline_topics(cfg.kafka.attempts_retention_ms),
                cfg.kafka.replication_factor,
            )
            .await?;
            println!("created {created:?}");
        }
        Cmd::Schemas => {
            for (subject, id) in Codec::new(&cfg.registry())?
                .register_all(&cfg.topic_prefix)
                .await?
            {
                println!("{subject:<32} id {id}");
            }
        }
        Cmd::Produce { topic, delete, .. } if !delete.is_empty() => {
            tombstones(&cfg, &topic, &delete).await?
        }
        Cmd::Produce { topic, file, .. } => produce(&cfg, &topic, file).await?,
        Cmd::Loadgen(a) => {
            setup(&cfg).await?;
            let p = loadgen::generate_and_publish(&cfg, &a.options(), false).await?;
            println!(
                "published {} concepts, {} prerequisites, {} attempts",
                p.concepts, p.links, p.attempts
            );
        }
        Cmd::Reconcile {
            dry_run,
            json,
            id_prefix,
            force,
        } => {
            let report = novyra_pipeline::reconcile::reconcile(
                &cfg,
                &novyra_pipeline::reconcile::ReconcileOptions {
                    dry_run,
                    id_prefix,
                    force,
                },
            )
            .await?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!("{:<18} {:>10}", "drift", "count");
                for (kind, n) in report.kinds() {
                    println!("{kind:<18} {n:>10}");
                }
                println!(
                    "{} records read; {}",
                    report.records_read,
                    if report.repaired {
                        "repaired"
                    } else if report.refused {
                        "REFUSED, nothing written"
                    } else {
                        "dry run, nothing written"
                    }
                );
            }
            if report.refused {
                eprintln!(
                    "reconcile would delete {} of {} graph items, more than pipeline.reconcile_max_delete_share allows; check with --dry-run and repeat with --force if the deletes are right",
                    report.would_delete, report.graph_size
                );
                return Ok(ExitCode::from(RECONCILE_REFUSED));
            }
        }
        Cmd::Tail(a) => tail::tail(&cfg, &a).await?,
        Cmd::Rewind { group } => {
            let name = cfg.group(&group);
            let Some((_, topics)) = run::groups(&cfg).into_iter().find(|(g, _)| *g == name) else {
                bail!("--group {group}: not one of the pipeline's groups");
            };
            if group == novyra_pipeline::ingest::GROUP {
                bail!("the ingest's offsets live in Postgres; it realigns by itself");
            }
            let kafka = cfg.kafka();
            let g2 = name.clone();
            let n = tokio::task::spawn_blocking(move || {
                novyra_kafka::lag::rewind_group(&kafka, &g2, &topics)
            })
            .await??;
            println!("rewound {name} to the beginning of {n} partition(s)");
        }
        Cmd::Replay(a) => {
            if !replay::replay(&cfg, &a).await? {
                return Ok(ExitCode::from(replay::DIFFERENT));
            }
        }
        Cmd::Dlq { cmd } => dlq::run(&cfg, &cmd).await?,
        Cmd::Lag(a) => {
            if !lag::lag(&cfg, &a).await? {
                return Ok(ExitCode::from(lag::EXCEEDED));
            }
        }
        Cmd::Summary { expect_attempts } => {
            let s = novyra_pipeline::summary::gather(&cfg, expect_attempts, "").await?;
            println!("{}", s.render(None, 0));
            if !s.ok() {
                bail!("some checks failed");
            }
        }
        Cmd::Demo(a) => {
            let o = a.options();
            novyra_store::migrate(&cfg.migrate_store())
                .await
                .context("migrating")?;
            setup(&cfg).await?;
            println!(
                "generating {} concepts, {} students, {} attempts (ids prefixed {:?})",
                o.concepts, o.students, o.attempts, o.id_prefix
            );
            let started = Instant::now();
            let p = loadgen::generate_and_publish(&cfg, &o, false).await?;
            run::run(
                &cfg,
                &[Worker::Catalog, Worker::Ingest, Worker::Graph],
                true,
                shutdown_token(),
            )
            .await?;
            let elapsed = started.elapsed();
            let mut s = novyra_pipeline::summary::gather(&cfg, None, &o.id_prefix).await?;
            let store = novyra_store::Store::new(&cfg.store())?;
            let stored = store.attempts_with_user_prefix(&o.id_prefix).await?;
            s.checks.insert(
                0,
                (
                    "attempts produced = rows in concept_attempts (this run)".into(),
                    stored == p.attempts as i64,
                    format!("{} produced, {stored} stored", p.attempts),
                ),
            );
            println!("{}", s.render(Some(elapsed), p.attempts));
            if !s.ok() {
                bail!("some checks failed");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
