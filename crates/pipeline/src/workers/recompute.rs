//! The background task that recomputes a concept's mastery after its BKT
//! parameters changed (the protocol is in `novyra_store::recompute`). It runs
//! beside the catalog worker, whose transactions queue the work; several
//! catalog processes share the queue (`FOR UPDATE SKIP LOCKED`).

use std::time::Duration;

use novyra_store::{Store, StoreError};
use tokio_util::sync::CancellationToken;

use crate::error::WorkerError;
use crate::health::retry;
use crate::Health;

/// Rows per recomputation transaction: large enough to amortise the round
/// trips, small enough that the ingest rarely waits on the row locks.
const STEP_ROWS: i64 = 500;

/// How often an idle task looks for queued concepts.
const POLL: Duration = Duration::from_millis(500);

/// Runs until `stop`, recomputing whatever is queued.
pub async fn run(
    store: &Store,
    health: &Health,
    stop: CancellationToken,
) -> Result<(), WorkerError> {
    for result in ["changed", "unchanged"] {
        health.metrics.recomputed.with_label_values(&[result]);
    }
    let fail = |e: StoreError| {
        if e.is_retryable() {
            WorkerError::Shutdown
        } else {
            WorkerError::Store(e)
        }
    };
    while !stop.is_cancelled() {
        let released = retry(health, "postgres", &stop, StoreError::is_retryable, || {
            store.recompute_barrier()
        })
        .await
        .map_err(fail)?;
        if released > 0 {
            tracing::info!(concepts = released, "mastery recomputation released");
        }
        while !stop.is_cancelled() {
            let step = retry(health, "postgres", &stop, StoreError::is_retryable, || {
                store.recompute_step(STEP_ROWS)
            })
            .await
            .map_err(fail)?;
            let Some(o) = step else { break };
            health
                .metrics
                .recomputed
                .with_label_values(&["changed"])
                .inc_by(o.rows_changed as u64);
            health
                .metrics
                .recomputed
                .with_label_values(&["unchanged"])
                .inc_by((o.rows_read - o.rows_changed) as u64);
            if o.done {
                tracing::info!(concept = %o.concept_id, "mastery recomputation done");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.cancelled() => {}
        }
    }
    Ok(())
}
