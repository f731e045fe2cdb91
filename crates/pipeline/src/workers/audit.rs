//! The `novyra-audit` group: model evaluations → the append-only
//! `evaluation_logs` table. Offsets are stored in Kafka after the insert;
//! a batch redelivered after a crash inserts nothing twice, because the
//! row key (event id, time) is fixed by the producer.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Mutex;

use chrono::NaiveDate;
use novyra_core::Group;
use novyra_store::evaluations::{months_of, EvaluationRecord};
use novyra_store::{MonthLog, Store, StoreError};
use tokio_util::sync::CancellationToken;

use crate::changes::{consume, Change, ChangeSink};
use crate::error::WorkerError;
use crate::{Config, Health};

/// Consumer group suffix: the group is `<prefix>-audit` (`novyra-audit`).
pub const GROUP: &str = Group::Audit.suffix();

struct AuditSink {
    store: Store,
    /// Months known to have their partition, so a batch asks Postgres only
    /// for months it has not seen.
    months_ready: Mutex<HashSet<NaiveDate>>,
}

impl AuditSink {
    async fn insert(&self, batch: &[EvaluationRecord]) -> Result<(), StoreError> {
        let missing: Vec<NaiveDate> = {
            let ready = self.months_ready.lock().unwrap_or_else(|p| p.into_inner());
            months_of(batch)
                .into_iter()
                .filter(|m| !ready.contains(m))
                .collect()
        };
        if !missing.is_empty() {
            for m in self
                .store
                .ensure_month_partitions(MonthLog::Evaluations, &missing)
                .await?
            {
                tracing::warn!(month = %m, "evaluations of this month land in the default partition");
            }
            self.months_ready
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(missing);
        }
        let inserted = self.store.insert_evaluations(batch).await?;
        tracing::debug!(
            inserted,
            duplicates = batch.len() - inserted,
            "evaluations stored"
        );
        Ok(())
    }
}

impl ChangeSink for AuditSink {
    type Batch = Vec<EvaluationRecord>;
    type Error = StoreError;
    const DEPENDENCY: &'static str = "postgres";

    fn prepare(&self, changes: Vec<Change>) -> Self::Batch {
        changes
            .into_iter()
            .filter_map(|c| match c {
                Change::Evaluation(e) => Some(*e),
                _ => None,
            })
            .collect()
    }

    fn write<'a>(
        &'a self,
        batch: &'a Self::Batch,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a {
        self.insert(batch)
    }

    fn retryable(e: &StoreError) -> bool {
        e.is_retryable()
    }
}

/// Runs the audit worker until `stop`.
pub async fn run(
    cfg: &Config,
    health: &Health,
    stop: CancellationToken,
) -> Result<(), WorkerError> {
    let sink = AuditSink {
        store: Store::new(&cfg.store())?,
        months_ready: Mutex::new(HashSet::new()),
    };
    let topics = cfg.topics(Group::Audit);
    consume(cfg, health, stop, GROUP, &topics, &sink).await
}
