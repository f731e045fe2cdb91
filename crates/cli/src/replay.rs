//! `novyra replay`: rebuild Postgres from the topics into an empty schema
//! (the attempts topic keeps everything; the catalog comes from the
//! compacted topics), and/or Neo4j from the compacted topics, with a
//! progress bar, then optionally verify the result against the live tables.
//!
//! The Postgres replay runs the real catalog and ingest workers under their
//! own consumer groups (`<prefix>-replay-<schema>-*`) with the outbox relay
//! off, so the live mastery topic is not written again; the replay's outbox
//! is emptied at the end. Kafka's own offsets of the live groups are never
//! touched.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use novyra_pipeline::reconcile::{reconcile, ReconcileOptions};
use novyra_pipeline::run::{self, Worker};
use novyra_pipeline::{CancellationToken, Config};
use novyra_store::attempts::MasteryRow;
use novyra_store::Store;

/// Exit code when `--verify` finds a difference.
pub const DIFFERENT: u8 = 3;

/// What to rebuild.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Postgres, into `--schema`.
    Postgres,
    /// Neo4j at `NEO4J_URI`, from the compacted topics.
    Graph,
    /// Both.
    All,
}

/// Options of `novyra replay`.
#[derive(Args, Debug)]
pub struct ReplayArgs {
    /// What to rebuild.
    #[arg(long, value_enum, default_value = "postgres")]
    target: Target,
    /// Postgres schema to rebuild into; created and migrated, must be empty.
    #[arg(long, default_value = "replay")]
    schema: String,
    /// Afterwards, compare with the live tables (and the graph with the
    /// topics); exit 3 on any difference.
    #[arg(long)]
    verify: bool,
    /// Graph: only ids starting with this (a graph shared by several
    /// pipelines); empty: everything.
    #[arg(long, default_value = "")]
    id_prefix: String,
}

/// Runs `novyra replay`; `Ok(false)` when verification found differences.
pub async fn replay(cfg: &Config, a: &ReplayArgs) -> Result<bool> {
    if !a
        .schema
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        || a.schema.is_empty()
    {
        bail!(
            "--schema {:?}: use lowercase letters, digits and _",
            a.schema
        );
    }
    let mut same = true;
    if matches!(a.target, Target::Postgres | Target::All) {
        same &= postgres(cfg, a).await?;
    }
    if matches!(a.target, Target::Graph | Target::All) {
        same &= graph(cfg, a.verify, &a.id_prefix).await?;
    }
    Ok(same)
}

async fn postgres(cfg: &Config, a: &ReplayArgs) -> Result<bool> {
    let live_schema = cfg.database.schema.clone();
    if live_schema.as_deref() == Some(a.schema.as_str()) {
        bail!("--schema {} is the live schema", a.schema);
    }
    let mut rcfg = cfg.clone();
    rcfg.database.schema = Some(a.schema.clone());
    rcfg.group_prefix = Some(format!(
        "{}-replay-{}",
        cfg.group("").trim_end_matches('-'),
        a.schema
    ));
    rcfg.pipeline.relay = false;
    rcfg.pipeline.reconcile_interval_secs = 0;
    rcfg.pipeline.metrics_addr = "127.0.0.1:0".into();
    novyra_store::migrate(&rcfg.migrate_store())
        .await
        .context("creating the replay schema")?;
    let target = Store::new(&rcfg.store())?;
    let counts = target.table_counts().await?;
    if counts.concept_attempts > 0 || counts.concepts > 0 {
        bail!(
            "schema {} is not empty ({} attempts, {} concepts): drop it or choose another --schema",
            a.schema,
            counts.concept_attempts,
            counts.concepts
        );
    }

    // The work: every record of the topics the two groups read.
    let groups = [
        rcfg.group(novyra_pipeline::catalog::GROUP),
        rcfg.group(novyra_pipeline::ingest::GROUP),
    ];
    let remaining = |lags: &[(String, Vec<novyra_kafka::lag::PartitionLag>)]| -> u64 {
        lags.iter()
            .filter(|(g, _)| groups.contains(g))
            .flat_map(|(_, ps)| ps.iter().map(|p| p.lag() as u64))
            .sum()
    };
    let total = remaining(&run::all_lag(&rcfg).await?);
    eprintln!("replaying {total} records into schema {}", a.schema);
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message("replay");
    let stop = CancellationToken::new();
    let health = novyra_pipeline::Health::new();
    let probe = novyra_pipeline::metrics::RateProbe::start(
        health
            .metrics
            .committed
            .with_label_values(&[&rcfg.group(novyra_pipeline::ingest::GROUP)]),
    );
    let workers = {
        let (rcfg, stop, health) = (rcfg.clone(), stop.clone(), health.clone());
        let until = run::Until::idle();
        tokio::spawn(async move {
            run::run_with(
                &rcfg,
                &[Worker::Catalog, Worker::Ingest],
                until,
                stop,
                &health,
            )
            .await
        })
    };
    while !workers.is_finished() {
        if let Ok(l) = run::all_lag(&rcfg).await {
            bar.set_position(total.saturating_sub(remaining(&l)));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    workers.await.context("replay workers")??;
    let rate = probe.finish();
    bar.set_position(total);
    bar.finish();
    target.clear_outbox().await?;
    let got = target.table_counts().await?;
    outln!(
        "replayed into schema {}: {} concepts, {} links, {} attempts, {} rubric evaluations, {} mastery rows",
        a.schema, got.concepts, got.concept_prerequisites, got.concept_attempts, got.rubric_evaluations, got.mastery_records
    )?;
    if let Some(r) = rate {
        // What `make bench` reads for its replay row.
        outln!("replay rate: {r:.0} attempts/s (first to last ingest commit)")?;
    }
    if !a.verify {
        return Ok(true);
    }

    // Verify: counts, then mastery row by row (both sorted by key).
    let live = Store::new(&cfg.store())?;
    let want = live.table_counts().await?;
    let mut same = true;
    outln!("{:<22} {:>12} {:>12}", "table", "live", "replay")?;
    for (name, l, r) in [
        ("concepts", want.concepts, got.concepts),
        (
            "concept_prerequisites",
            want.concept_prerequisites,
            got.concept_prerequisites,
        ),
        (
            "concept_attempts",
            want.concept_attempts,
            got.concept_attempts,
        ),
        (
            "rubric_evaluations",
            want.rubric_evaluations,
            got.rubric_evaluations,
        ),
        ("mastery_records", want.mastery_records, got.mastery_records),
    ] {
        outln!(
            "{name:<22} {l:>12} {r:>12}{}",
            if l == r { "" } else { "  DIFFERENT" }
        )?;
        same &= l == r;
    }
    let (only_live, only_replay, differ) =
        diff_rows(&live.mastery_rows().await?, &target.mastery_rows().await?);
    outln!("mastery rows: {only_live} only live, {only_replay} only in the replay, {differ} with other values")?;
    same &= only_live + only_replay + differ == 0;
    outln!(
        "{}",
        if same {
            "verify: identical"
        } else {
            "verify: DIFFERENT (a live pipeline still running, or drift)"
        }
    )?;
    Ok(same)
}

/// Merge-compares two key-sorted row lists.
fn diff_rows(live: &[MasteryRow], replay: &[MasteryRow]) -> (u64, u64, u64) {
    let (mut i, mut j) = (0, 0);
    let (mut only_l, mut only_r, mut differ) = (0, 0, 0);
    while i < live.len() || j < replay.len() {
        let ord = match (live.get(i), replay.get(j)) {
            (Some(l), Some(r)) => (&l.user_id, &l.concept_id).cmp(&(&r.user_id, &r.concept_id)),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        match ord {
            std::cmp::Ordering::Less => {
                only_l += 1;
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                only_r += 1;
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                // The values are the law; versions also count recomputations,
                // which depend on the order concepts and attempts arrived in.
                differ += u64::from(!live[i].state().same_values(&replay[j].state()));
                i += 1;
                j += 1;
            }
        }
    }
    (only_l, only_r, differ)
}

async fn graph(cfg: &Config, verify: bool, id_prefix: &str) -> Result<bool> {
    let opts = ReconcileOptions {
        dry_run: false,
        id_prefix: id_prefix.to_owned(),
        force: false,
    };
    let spinner = ProgressBar::new_spinner();
    spinner.set_message("rebuilding Neo4j from the compacted topics");
    spinner.enable_steady_tick(Duration::from_millis(200));
    let report = reconcile(cfg, &opts).await?;
    spinner.finish_and_clear();
    if report.refused {
        anyhow::bail!(
            "the graph is not empty: rebuilding would delete {} of its {} items; wipe it or run `novyra reconcile --force`",
            report.would_delete,
            report.graph_size
        );
    }
    outln!(
        "graph: {} records read; written: {} concepts, {} links, {} mastery edges; removed: {} concepts, {} links, {} edges",
        report.records_read,
        report.missing_concept + report.stale_concept,
        report.missing_link,
        report.missing_mastery + report.stale_mastery,
        report.extra_concept,
        report.extra_link,
        report.extra_mastery
    )?;
    if !verify {
        return Ok(true);
    }
    let check = reconcile(
        cfg,
        &ReconcileOptions {
            dry_run: true,
            ..opts
        },
    )
    .await?;
    outln!("graph verify: drift {}", check.drift())?;
    Ok(check.drift() == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(u: &str, c: &str, m: f64) -> MasteryRow {
        MasteryRow {
            user_id: u.into(),
            concept_id: c.into(),
            mastery: m,
            attempts_total: 1,
            attempts_correct: 1,
            confidence_weight: 1.0,
            version: 1,
            last_event_id: "e".into(),
            updated_at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn rows_diff_by_key_and_value() {
        let live = [row("a", "1", 0.1), row("a", "2", 0.2), row("b", "1", 0.3)];
        let replay = [row("a", "2", 0.2), row("b", "1", 0.4), row("c", "1", 0.5)];
        assert_eq!(diff_rows(&live, &replay), (1, 1, 1));
        assert_eq!(diff_rows(&live, &live), (0, 0, 0));
        assert_eq!(diff_rows(&[], &live), (0, 3, 0));
    }
}
