//! Recomputing a concept's mastery when its BKT parameters change, so that
//! `mastery_records` stays a pure function of (the attempt log, the current
//! catalogue) whatever order concepts and attempts arrived in (DESIGN.md).
//!
//! The protocol, and why each step is there:
//! 1. The catalog transaction that changes a concept's effective parameters
//!    queues the concept in `mastery_recompute` (a further change bumps the
//!    job's generation and restarts it from the first user).
//! 2. Every ingest transaction holds a *shared* advisory lock for its whole
//!    length and reads the parameters inside it. The [`Store::recompute_barrier`]
//!    takes the same lock *exclusively* once for all newly queued jobs: when
//!    it gets it, no ingest transaction that may have read the old
//!    parameters is still open, and every later one reads the new ones.
//! 3. [`Store::recompute_step`] then takes one concept's next rows in user
//!    order `FOR UPDATE`, replays their attempts (per pair in the order they
//!    were applied, i.e. by `mastery_version`) with the current parameters,
//!    writes the rows that changed with a bumped version, queues them in the
//!    outbox (so the mastery topic and Neo4j follow) and moves the job's
//!    cursor, all in one transaction: a crash resumes after the last
//!    committed step.
//! 4. An ingest transaction that read a row before a step replaced it
//!    cannot overwrite the step's result: its upsert only applies where the
//!    row still has the recomputation count it read (`version -
//!    attempts_total`), and otherwise fails with [`StoreError::Conflict`]
//!    and is retried with fresh rows.
//!
//! Attempt rows are never touched: they keep the parameters and values
//! computed at ingest time, as the audit of what was known then.

use crate::db::in_tx;
use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel::sql_types::{Array, BigInt, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use novyra_core::{BktParams, ConceptAttempted, MasteryState};

use crate::attempts::{write_mastery, MasteryRow};
use crate::catalog::current_params;
use crate::{Store, StoreError};

/// The advisory lock key shared by ingest (shared) and the barrier
/// (exclusive), per schema so that pipelines in other schemas of the same
/// database do not wait for each other.
pub(crate) const PARAMS_LOCK_KEY: &str = "hashtext(current_schema() || ':novyra_bkt_params')";

/// Queues `concept_id` for recomputation, or restarts its queued job.
pub async fn enqueue(tx: &mut AsyncPgConnection, concept_id: &str) -> Result<(), StoreError> {
    diesel::sql_query(
        "INSERT INTO mastery_recompute (concept_id) VALUES ($1) \
         ON CONFLICT (concept_id) DO UPDATE SET \
           generation = mastery_recompute.generation + 1, \
           after_user = '', rows_changed = 0, requested_at = now()",
    )
    .bind::<Text, _>(concept_id)
    .execute(tx)
    .await?;
    Ok(())
}

/// What one [`Store::recompute_step`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepOutcome {
    /// The concept worked on.
    pub concept_id: String,
    /// Mastery rows read.
    pub rows_read: usize,
    /// Rows whose values changed (written, versions bumped, queued for the topic).
    pub rows_changed: usize,
    /// The concept's job is finished.
    pub done: bool,
}

#[derive(QueryableByName)]
struct Job {
    #[diesel(sql_type = Text)]
    concept_id: String,
    #[diesel(sql_type = BigInt)]
    generation: i64,
    #[diesel(sql_type = Text)]
    after_user: String,
}

#[derive(QueryableByName)]
struct AttemptRow {
    #[diesel(sql_type = Text)]
    user_id: String,
    #[diesel(sql_type = Text)]
    event_id: String,
    #[diesel(sql_type = diesel::sql_types::Timestamptz)]
    occurred_at: DateTime<Utc>,
    #[diesel(sql_type = diesel::sql_types::Bool)]
    correct: bool,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    hints_used: i32,
}

impl Store {
    /// Concepts whose recomputation is queued or under way.
    pub async fn recompute_pending(&self) -> Result<i64, StoreError> {
        in_tx!(self, |c| {
            Ok(crate::schema::mastery_recompute::table
                .count()
                .get_result(c)
                .await?)
        })
    }

    /// Step 2 of the module doc: waits until no ingest transaction that may
    /// have read older parameters is open, then releases the queued jobs.
    /// Returns how many were released (0 without taking the lock when none
    /// wait).
    pub async fn recompute_barrier(&self) -> Result<usize, StoreError> {
        let waiting: i64 = in_tx!(self, |c| {
            Ok(crate::schema::mastery_recompute::table
                .filter(
                    crate::schema::mastery_recompute::barrier_generation
                        .ne(crate::schema::mastery_recompute::generation),
                )
                .count()
                .get_result(c)
                .await?)
        })?;
        if waiting == 0 {
            return Ok(0);
        }
        in_tx!(self, |tx| {
            diesel::sql_query(format!("SELECT pg_advisory_xact_lock({PARAMS_LOCK_KEY})"))
                .execute(tx)
                .await?;
            // Every job visible now was committed before the lock was
            // granted, so the barrier covers it.
            Ok(diesel::sql_query(
                "UPDATE mastery_recompute SET barrier_generation = generation \
                 WHERE barrier_generation <> generation",
            )
            .execute(tx)
            .await?)
        })
    }

    /// Step 3 of the module doc for up to `max_rows` rows of one released
    /// job; `None` when no released job is left.
    pub async fn recompute_step(&self, max_rows: i64) -> Result<Option<StepOutcome>, StoreError> {
        in_tx!(self, |tx| {
            let Some(job) = diesel::sql_query(
                "SELECT concept_id, generation, after_user FROM mastery_recompute \
                 WHERE barrier_generation = generation \
                 ORDER BY requested_at, concept_id LIMIT 1 FOR UPDATE SKIP LOCKED",
            )
            .get_result::<Job>(tx)
            .await
            .optional()?
            else {
                return Ok(None);
            };
            let params = current_params(tx, &job.concept_id)
                .await?
                .unwrap_or_default();
            let rows: Vec<MasteryRow> = diesel::sql_query(
                "SELECT * FROM mastery_records WHERE concept_id = $1 AND user_id > $2 \
                 ORDER BY user_id LIMIT $3 FOR UPDATE",
            )
            .bind::<Text, _>(&job.concept_id)
            .bind::<Text, _>(&job.after_user)
            .bind::<BigInt, _>(max_rows)
            .load(tx)
            .await?;
            let mut out = StepOutcome {
                concept_id: job.concept_id.clone(),
                rows_read: rows.len(),
                ..StepOutcome::default()
            };
            let Some(last) = rows.last().map(|r| r.user_id.clone()) else {
                diesel::sql_query(
                    "DELETE FROM mastery_recompute WHERE concept_id = $1 AND generation = $2",
                )
                .bind::<Text, _>(&job.concept_id)
                .bind::<BigInt, _>(job.generation)
                .execute(tx)
                .await?;
                out.done = true;
                return Ok(Some(out));
            };
            let users: Vec<&str> = rows.iter().map(|r| r.user_id.as_str()).collect();
            let attempts: Vec<AttemptRow> = diesel::sql_query(
                "SELECT user_id, event_id, occurred_at, correct, hints_used \
                 FROM concept_attempts WHERE user_id = ANY($1) AND concept_id = $2 \
                 ORDER BY user_id, mastery_version",
            )
            .bind::<Array<Text>, _>(&users)
            .bind::<Text, _>(&job.concept_id)
            .load(tx)
            .await?;
            let changed = replace_states(
                &rows,
                &job.concept_id,
                &params,
                &by_user(&job.concept_id, attempts),
            );
            out.rows_changed = changed.len();
            let written = write_mastery(
                tx,
                include_str!("sql/recompute_mastery.sql"),
                &changed,
                // Caused by no attempt: its record carries no freshness.
                &vec![None; changed.len()],
                None,
            )
            .await?;
            if written != changed.len() {
                return Err(StoreError::Conflict(format!(
                    "recompute of {}: {written} of {} rows written",
                    job.concept_id,
                    changed.len()
                )));
            }
            diesel::sql_query(
                "UPDATE mastery_recompute SET after_user = $2, rows_changed = rows_changed + $3 \
                 WHERE concept_id = $1",
            )
            .bind::<Text, _>(&job.concept_id)
            .bind::<Text, _>(&last)
            .bind::<BigInt, _>(out.rows_changed as i64)
            .execute(tx)
            .await?;
            Ok(Some(out))
        })
    }
}

/// The rows among `rows` whose replay with `params` of their user's
/// attempts (in applied order) differs from what they hold, with the new
/// values and a version one above the stored one. Pure, so the
/// replay-determinism property test drives exactly this code.
pub fn replace_states(
    rows: &[MasteryRow],
    concept_id: &str,
    params: &BktParams,
    attempts_by_user: &BTreeMap<String, Vec<ConceptAttempted>>,
) -> Vec<MasteryRow> {
    rows.iter()
        .filter_map(|r| {
            let stored = r.state();
            let attempts = attempts_by_user
                .get(&r.user_id)
                .map(Vec::as_slice)
                .unwrap_or(&[]);
            let mut fresh = MasteryState::replay(params, attempts);
            if fresh.same_values(&stored) {
                return None;
            }
            fresh.version = stored.version + 1;
            Some(MasteryRow::from_state(&r.user_id, concept_id, &fresh))
        })
        .collect()
}

/// Attempt rows grouped by user, in the order they were read.
fn by_user(concept_id: &str, attempts: Vec<AttemptRow>) -> BTreeMap<String, Vec<ConceptAttempted>> {
    let mut out: BTreeMap<String, Vec<ConceptAttempted>> = BTreeMap::new();
    for a in attempts {
        out.entry(a.user_id.clone())
            .or_default()
            .push(ConceptAttempted {
                event_id: a.event_id,
                user_id: a.user_id,
                concept_id: concept_id.to_owned(),
                occurred_at: a.occurred_at.timestamp_millis(),
                correct: a.correct,
                hints_used: a.hints_used,
                duration_ms: 0,
                rubric: None,
            });
    }
    out
}
