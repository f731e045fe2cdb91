//! The ceiling the ingest is measured against: how fast this Postgres
//! absorbs the same attempts when nothing but the rows is written — binary
//! `COPY` into `concept_attempts` (the same partitioned table, with its
//! primary key and index, in a fresh schema), through the same connection
//! URL as the worker, one transaction per batch of the worker's size so
//! both pay the same commits. The worker does more per attempt (decoding,
//! the event-id claim, mastery, the outbox, the offset fence), so the ratio
//! says how much of Postgres's capacity that costs.
//!
//! The mastery columns hold fixed values: what a row contains does not
//! change what `COPY` costs, only its width does, and the widths match.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use novyra_pipeline::loadgen::{self, LoadgenOptions};
use novyra_pipeline::Config;
use novyra_store::partitions::month_start;
use novyra_store::{MonthLog, Store};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

/// The rate of one ceiling run.
#[derive(Debug, Clone, Copy)]
pub struct Ceiling {
    /// Rows copied.
    pub rows: usize,
    /// From the first batch's start to the last commit.
    pub seconds: f64,
}

impl Ceiling {
    /// Rows per second.
    pub fn rate(&self) -> f64 {
        self.rows as f64 / self.seconds.max(1e-3)
    }
}

const COLUMNS: &str = "event_id, user_id, concept_id, occurred_at, correct, hints_used, \
    duration_ms, mastery_before, mastery_after, mastery_delta, mastery_version, bkt_p_init, \
    bkt_p_transit, bkt_p_slip, bkt_p_guess, source_partition, source_offset, schema_id";

const TYPES: [Type; 18] = [
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TIMESTAMPTZ,
    Type::BOOL,
    Type::INT4,
    Type::INT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::INT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::FLOAT8,
    Type::INT4,
    Type::INT8,
    Type::INT4,
];

/// Copies `lo`'s attempts into `cfg`'s schema (migrated here) and times it.
pub async fn measure(cfg: &Config, lo: &LoadgenOptions) -> anyhow::Result<Ceiling> {
    novyra_store::migrate(&cfg.migrate_store()).await?;
    let now = chrono::Utc::now().timestamp_millis();
    let curriculum = loadgen::curriculum(lo, now);
    let attempts = loadgen::attempts(lo, &curriculum, now);

    // The month partitions first, as the worker has them before it writes.
    let mut months: Vec<_> = attempts
        .iter()
        .map(|a| month_start(novyra_store::ts(a.occurred_at).date_naive()))
        .collect();
    months.sort_unstable();
    months.dedup();
    let store_cfg = cfg.store();
    Store::new(&store_cfg)?
        .ensure_month_partitions(MonthLog::Attempts, &months)
        .await?;

    let mut client = novyra_store::connect::raw_client(&store_cfg.url).await?;
    let schema = cfg.database.schema.as_deref().unwrap_or("public");
    let copy = format!("COPY concept_attempts ({COLUMNS}) FROM STDIN (FORMAT binary)");
    let batch = cfg.pipeline.max_batch.max(1);
    let started = Instant::now();
    for (b, chunk) in attempts.chunks(batch).enumerate() {
        let tx = client.transaction().await?;
        tx.batch_execute(&format!("SET LOCAL search_path = {}", quote_ident(schema)))
            .await?;
        let sink = tx.copy_in(&copy).await.context("starting COPY")?;
        let writer = BinaryCopyInWriter::new(sink, &TYPES);
        let mut writer = std::pin::pin!(writer);
        for (i, a) in chunk.iter().enumerate() {
            let at = UNIX_EPOCH + Duration::from_millis(a.occurred_at.max(0) as u64);
            let offset = (b * batch + i) as i64;
            let row: [&(dyn ToSql + Sync); 18] = [
                &a.event_id,
                &a.user_id,
                &a.concept_id,
                &at as &SystemTime,
                &a.correct,
                &a.hints_used,
                &a.duration_ms,
                &0.3f64,
                &0.35f64,
                &0.05f64,
                &1i64,
                &0.2f64,
                &0.15f64,
                &0.1f64,
                &0.2f64,
                &0i32,
                &offset,
                &1i32,
            ];
            writer.as_mut().write(&row).await.context("copying a row")?;
        }
        let copied = writer.finish().await.context("finishing COPY")?;
        anyhow::ensure!(
            copied == chunk.len() as u64,
            "COPY stored {copied} of {} rows",
            chunk.len()
        );
        tx.commit().await?;
    }
    Ok(Ceiling {
        rows: attempts.len(),
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}
