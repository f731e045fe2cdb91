//! `novyra`: one thin binary over the pipeline crates. Every worker, the
//! all-in-one dev run, migrations, topics and schemas, producing and load
//! generation, lag, and graph queries.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use args::{Cli, Cmd, DbCmd, GraphCmd};
use clap::Parser;
use novyra_core::{
    keys, ConceptAttempted, ConceptUpserted, EvaluationLogged, MasteryUpdated, PrerequisiteLinked,
};
use novyra_pipeline::loadgen;
use novyra_pipeline::run::{self, Worker};
use novyra_pipeline::telemetry::Telemetry;
use novyra_pipeline::{CancellationToken, Config};
use novyra_registry::{Codec, EventKind};

/// `println!` that returns the write error instead of panicking, so that
/// `novyra … | head` ends quietly when the reader goes away (see `main`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout(), $($arg)*)
    }};
}

mod args;
mod backup;
mod dlq;
mod lag;
mod replay;
mod tail;

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
        EventKind::Evaluation => go!(EvaluationLogged, |v: &EvaluationLogged| v.user_id.clone()),
    };
    outln!("published {n} events to {t}")?;
    Ok(())
}

async fn tombstones(cfg: &Config, topic: &str, keys_: &[String]) -> Result<()> {
    let kind = EventKind::from_topic(&cfg.topic_prefix, topic)
        .with_context(|| format!("unknown topic kind {topic:?}"))?;
    let valid = |k: &str| match kind {
        EventKind::Attempt | EventKind::Evaluation => false,
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
    outln!("published {} tombstone(s) to {t}", keys_.len())?;
    Ok(())
}

/// Exit code of a reconciliation the delete brake refused.
const RECONCILE_REFUSED: u8 = 3;

/// Exit status: 0 success, 1 error, 2 usage (clap), 3 a threshold or
/// check that failed on purpose (lag above `--max-lag`, `replay --verify`
/// differences, a reconcile the delete brake refused). A reader that goes
/// away (`novyra tail … | head -1`) is not an error: the output simply ends.
#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let telemetry = match Telemetry::init(cli.log_json) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("Error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = match run_cli(cli).await {
        Ok(code) => code,
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e:?}");
            ExitCode::FAILURE
        }
    };
    telemetry.shutdown().await;
    code
}

/// A topic given on the command line: a kind (`attempts`, `dlq`, …) from
/// the topic table, or a full name (anything with a dot) taken as is.
fn topic_arg(cfg: &Config, s: &str) -> Result<String> {
    if s.contains('.') {
        return Ok(s.to_owned());
    }
    match novyra_core::Topic::parse(&cfg.topic_prefix, s) {
        Some(t) => Ok(cfg.topic(t)),
        None => bail!(
            "unknown topic kind {s:?}: one of {}, or a full topic name",
            novyra_core::Topic::ALL.map(|t| t.suffix()).join(", ")
        ),
    }
}

/// Whether `e` is, somewhere in its chain, a write to a closed pipe.
fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

async fn run_cli(cli: Cli) -> Result<ExitCode> {
    let cfg = Config::load(cli.config.as_deref()).context("configuration")?;
    dispatch(cli.cmd, &cfg).await.map_err(|e| {
        // neo4rs errors do not say which server they came from; with a
        // wrong CA or a dead host that is the first thing to know.
        if e.chain()
            .any(|c| c.downcast_ref::<novyra_graph::GraphError>().is_some())
        {
            e.context(format!("neo4j at {}", cfg.neo4j.uri))
        } else {
            e
        }
    })
}

async fn dispatch(cmd: Cmd, cfg: &Config) -> Result<ExitCode> {
    match cmd {
        Cmd::Run { exit_when_idle } => {
            run::run(cfg, &Worker::ALL, exit_when_idle, shutdown_token()).await?
        }
        Cmd::Ingest => run::run(cfg, &[Worker::Ingest], false, shutdown_token()).await?,
        Cmd::Catalog => run::run(cfg, &[Worker::Catalog], false, shutdown_token()).await?,
        Cmd::Audit => run::run(cfg, &[Worker::Audit], false, shutdown_token()).await?,
        Cmd::Graph { query: None } => {
            run::run(cfg, &[Worker::Graph], false, shutdown_token()).await?
        }
        Cmd::Graph {
            query: Some(GraphCmd::Export { out, id_prefix }),
        } => backup::export(cfg, &out, &id_prefix).await?,
        Cmd::Graph {
            query: Some(GraphCmd::Import { file }),
        } => backup::import(cfg, &file).await?,
        Cmd::Graph {
            query: Some(GraphCmd::Next { user, limit, json }),
        } => {
            let g = cfg.graph()?;
            let next = g
                .next_concepts(&user, cfg.pipeline.mastery_threshold, limit)
                .await?;
            for c in next {
                if json {
                    outln!(
                        "{}",
                        serde_json::json!({"id": c.id, "name": c.name, "score": c.score, "prerequisites": c.prerequisites})
                    )?;
                } else {
                    outln!(
                        "{:<14} {:<24} score {:.3}  prerequisites {}",
                        c.id,
                        c.name,
                        c.score,
                        c.prerequisites
                    )?;
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
                outln!(
                    "{:<4} {:<24} {:<28} {:>6} {:>5}",
                    "step",
                    "concept",
                    "name",
                    "score",
                    "hops"
                )?;
            }
            for (i, s) in steps.iter().enumerate() {
                if json {
                    outln!(
                        "{}",
                        serde_json::json!({"step": i + 1, "id": s.id, "name": s.name, "score": s.score, "hops": s.hops})
                    )?;
                } else {
                    outln!(
                        "{:<4} {:<24} {:<28} {:>6.3} {:>5}",
                        i + 1,
                        s.id,
                        s.name,
                        s.score,
                        s.hops
                    )?;
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
                outln!(
                    "{:<24} {:<28} {:>6} {:>10} {:>9}",
                    "concept",
                    "name",
                    "score",
                    "dependents",
                    "attempted"
                )?;
            }
            for w in weak {
                if json {
                    outln!(
                        "{}",
                        serde_json::json!({"id": w.id, "name": w.name, "score": w.score, "dependents": w.dependents, "attempted_dependents": w.attempted_dependents})
                    )?;
                } else {
                    outln!(
                        "{:<24} {:<28} {:>6.3} {:>10} {:>9}",
                        w.id,
                        w.name,
                        w.score,
                        w.dependents,
                        w.attempted_dependents
                    )?;
                }
            }
        }
        Cmd::Db {
            cmd: DbCmd::RefreshLeaderboard,
        } => {
            novyra_store::Store::new(&cfg.store())?
                .refresh_leaderboard()
                .await?;
            outln!("leaderboard refreshed")?;
        }
        Cmd::Db {
            cmd: DbCmd::Leaderboard { limit, json },
        } => {
            let rows = novyra_store::Store::new(&cfg.analytics_store())?
                .leaderboard(limit)
                .await?;
            for r in rows {
                if json {
                    outln!(
                        "{}",
                        serde_json::json!({
                            "rank": r.rank,
                            "user_id": r.user_id,
                            "concepts_mastered": r.concepts_mastered,
                            "concepts_attempted": r.concepts_attempted,
                            "mean_mastery": r.mean_mastery,
                            "refreshed_at": r.refreshed_at.to_rfc3339(),
                        })
                    )?;
                } else {
                    outln!(
                        "{:>5}  {:<32} {:>4} of {:<4} mastered  mean {:.3}",
                        r.rank,
                        r.user_id,
                        r.concepts_mastered,
                        r.concepts_attempted,
                        r.mean_mastery
                    )?;
                }
            }
        }
        Cmd::Db {
            cmd: DbCmd::Migrate,
        } => {
            let done = novyra_store::migrate(&cfg.migrate_store()).await?;
            outln!("applied {} migration(s)", done.len())?;
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
                for (log, m) in store.ensure_months_ahead(today, n).await? {
                    outln!(
                        "month {m} of {} stays in the default partition (it already holds rows of it)",
                        log.table()
                    )?;
                }
            }
            if let Some(cutoff) = detach_before {
                let owner = novyra_store::Store::new(&cfg.migrate_store())?;
                for name in owner.detach_partitions_before(cutoff).await? {
                    outln!("detached {name}")?;
                }
            }
            for log in novyra_store::MonthLog::ALL {
                for (name, rows) in store.month_partitions(log).await? {
                    outln!("{name:<32} {rows:>10}")?;
                }
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
            outln!("created {created:?}")?;
        }
        Cmd::Acls {
            json,
            principal_prefix,
        } => {
            let base = cfg.group_base();
            let acls = novyra_kafka::acls::pipeline_acls(&novyra_kafka::acls::Naming {
                topic_prefix: &cfg.topic_prefix,
                group_prefix: &base,
                principal_prefix: &principal_prefix,
            });
            for a in acls {
                if json {
                    outln!("{}", serde_json::to_string(&a)?)?;
                } else {
                    outln!(
                        "{:<24} {:<9} {:?} {} ({:?})",
                        a.principal,
                        format!("{:?}", a.operation),
                        a.resource_type,
                        a.resource_name,
                        a.pattern_type
                    )?;
                }
            }
        }
        Cmd::Schemas => {
            for (subject, id) in Codec::new(&cfg.registry())?
                .register_all(&cfg.topic_prefix)
                .await?
            {
                outln!("{subject:<32} id {id}")?;
            }
        }
        Cmd::Produce { topic, delete, .. } if !delete.is_empty() => {
            tombstones(cfg, &topic, &delete).await?
        }
        Cmd::Produce { topic, file, .. } => produce(cfg, &topic, file).await?,
        Cmd::Loadgen(a) => {
            setup(cfg).await?;
            let p = loadgen::generate_and_publish(cfg, &a.options(), false).await?;
            outln!(
                "published {} concepts, {} prerequisites, {} attempts",
                p.concepts,
                p.links,
                p.attempts
            )?;
        }
        Cmd::Reconcile {
            dry_run,
            json,
            id_prefix,
            force,
        } => {
            let report = novyra_pipeline::reconcile::reconcile(
                cfg,
                &novyra_pipeline::reconcile::ReconcileOptions {
                    dry_run,
                    id_prefix,
                    force,
                },
            )
            .await?;
            if json {
                outln!("{}", serde_json::to_string(&report)?)?;
            } else {
                outln!("{:<18} {:>10}", "drift", "count")?;
                for (kind, n) in report.kinds() {
                    outln!("{kind:<18} {n:>10}")?;
                }
                outln!(
                    "{} records read; {}",
                    report.records_read,
                    if report.repaired {
                        "repaired"
                    } else if report.refused {
                        "REFUSED, nothing written"
                    } else {
                        "dry run, nothing written"
                    }
                )?;
            }
            if report.refused {
                eprintln!(
                    "reconcile would delete {} of {} graph items, more than pipeline.reconcile_max_delete_share allows; check with --dry-run and repeat with --force if the deletes are right",
                    report.would_delete, report.graph_size
                );
                return Ok(ExitCode::from(RECONCILE_REFUSED));
            }
        }
        Cmd::Tail(a) => tail::tail(cfg, &a).await?,
        Cmd::Rewind { group } => {
            let name = cfg.group(&group);
            let Some((_, topics)) = run::groups(cfg).into_iter().find(|(g, _)| *g == name) else {
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
            outln!("rewound {name} to the beginning of {n} partition(s)")?;
        }
        Cmd::Replay(a) => {
            if !replay::replay(cfg, &a).await? {
                return Ok(ExitCode::from(replay::DIFFERENT));
            }
        }
        Cmd::Dlq { cmd } => dlq::run(cfg, &cmd).await?,
        Cmd::Lag(a) => {
            if !lag::lag(cfg, &a).await? {
                return Ok(ExitCode::from(lag::EXCEEDED));
            }
        }
        Cmd::Summary { expect_attempts } => {
            let s = novyra_pipeline::summary::gather(cfg, expect_attempts, "").await?;
            outln!("{}", s.render(None))?;
            if !s.ok() {
                bail!("some checks failed");
            }
        }
        Cmd::Demo(a) => {
            let o = a.options();
            novyra_store::migrate(&cfg.migrate_store())
                .await
                .context("migrating")?;
            setup(cfg).await?;
            outln!(
                "generating {} concepts, {} students, {} attempts (ids prefixed {:?})",
                o.concepts,
                o.students,
                o.attempts,
                o.id_prefix
            )?;
            let r = novyra_pipeline::live::run(cfg, &o, shutdown_token()).await?;
            let p = r.published;
            let mut s = novyra_pipeline::summary::gather(cfg, None, &o.id_prefix).await?;
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
            let evals = store.evaluations_with_user_prefix(&o.id_prefix).await?;
            s.checks.insert(
                1,
                (
                    "evaluations produced = rows in evaluation_logs (this run)".into(),
                    evals == p.evaluations as i64,
                    format!("{} produced, {evals} stored", p.evaluations),
                ),
            );
            outln!("{}", s.render(Some(&r)))?;
            if !s.ok() {
                bail!("some checks failed");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
