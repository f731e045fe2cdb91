//! `novyra dlq`: list dead letters and, after the cause is fixed, send
//! chosen ones back to the topic they came from, where the pipeline
//! processes them like any new record (attempts are deduplicated by event
//! id and the compacted topics are idempotent, so a second replay is
//! harmless).

use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Args, Subcommand};
use novyra_core::Topic;
use novyra_kafka::dlq::{self, DeadLetter};
use novyra_kafka::rdkafka::message::{Header, OwnedHeaders};
use novyra_kafka::rdkafka::producer::FutureRecord;
use novyra_pipeline::Config;

/// Header naming the DLQ record a replayed record came from.
pub const REPLAYED_FROM: &str = "novyra.replayed.from";

/// `novyra dlq` subcommands.
#[derive(Subcommand, Debug)]
pub enum DlqCmd {
    /// One line per dead letter: DLQ position, source, reason.
    #[command(after_help = "Example:\n  novyra dlq list --source concepts | head")]
    List(Select),
    /// Send the chosen dead letters back to their source topics.
    #[command(after_help = "Example:\n  novyra dlq replay --class write_rejected --dry-run")]
    Replay {
        #[command(flatten)]
        select: Select,
        /// Show what would be sent, send nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Which dead letters (all filters must hold; none: every record).
#[derive(Args, Debug)]
pub struct Select {
    /// Reason class (`__connect.errors.exception.class.name`), e.g. write_rejected.
    #[arg(long)]
    class: Option<String>,
    /// Source topic: a kind (attempts, concepts, ...) or a full name.
    #[arg(long)]
    source: Option<String>,
    /// One DLQ record by position, PARTITION:OFFSET (repeatable).
    #[arg(long = "record", value_name = "PARTITION:OFFSET")]
    records: Vec<String>,
}

impl Select {
    fn chosen(&self, cfg: &Config, all: Vec<DeadLetter>) -> Result<Vec<DeadLetter>> {
        let positions = self
            .records
            .iter()
            .map(|r| {
                let (p, o) = r
                    .split_once(':')
                    .ok_or_else(|| anyhow::anyhow!("--record {r:?}: expected PARTITION:OFFSET"))?;
                Ok((p.parse::<i32>()?, o.parse::<i64>()?))
            })
            .collect::<Result<Vec<_>>>()?;
        let source = self
            .source
            .as_ref()
            .map(|s| crate::topic_arg(cfg, s))
            .transpose()?;
        Ok(all
            .into_iter()
            .filter(|d| self.class.as_ref().is_none_or(|c| *c == d.class))
            .filter(|d| source.as_ref().is_none_or(|s| *s == d.source_topic))
            .filter(|d| positions.is_empty() || positions.contains(&(d.partition, d.offset)))
            .collect())
    }
}

fn line(d: &DeadLetter) -> String {
    format!(
        "dlq {}:{:<8} from {}[{}]@{} {:<20} {}",
        d.partition,
        d.offset,
        d.source_topic,
        d.source_partition.map_or("?".into(), |p| p.to_string()),
        d.source_offset.map_or("?".into(), |o| o.to_string()),
        d.class,
        d.message
    )
}

/// Runs a `novyra dlq` subcommand.
pub async fn run(cfg: &Config, cmd: &DlqCmd) -> Result<()> {
    let kafka = cfg.kafka();
    let topic = cfg.topic(Topic::Dlq);
    let all = tokio::task::spawn_blocking(move || dlq::read_all(&kafka, &topic)).await??;
    match cmd {
        DlqCmd::List(s) => {
            for d in s.chosen(cfg, all)? {
                outln!("{}", line(&d))?;
            }
        }
        DlqCmd::Replay { select, dry_run } => {
            let chosen = select.chosen(cfg, all)?;
            let producer = cfg.kafka().producer()?;
            for d in &chosen {
                if d.source_topic.is_empty() {
                    bail!(
                        "dlq {}:{} has no source topic header",
                        d.partition,
                        d.offset
                    );
                }
                outln!(
                    "{} {}",
                    if *dry_run { "would replay" } else { "replay" },
                    line(d)
                )?;
                if *dry_run {
                    continue;
                }
                let from = format!("{}:{}", d.partition, d.offset);
                let mut r: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&d.source_topic)
                    .headers(OwnedHeaders::new().insert(Header {
                        key: REPLAYED_FROM,
                        value: Some(&from),
                    }));
                if let Some(k) = &d.key {
                    r = r.key(k);
                }
                if let Some(p) = &d.payload {
                    r = r.payload(p);
                }
                producer
                    .send(r, Duration::from_secs(30))
                    .await
                    .map_err(|(e, _)| e)?;
            }
            outln!(
                "{} {} dead letter(s)",
                if *dry_run { "would replay" } else { "replayed" },
                chosen.len()
            )?;
        }
    }
    Ok(())
}
