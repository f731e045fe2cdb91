//! The audit log of model evaluations: append-only, month-partitioned,
//! JSONB documents behind GIN indexes. A record is written once; a replay
//! or a redelivered batch inserts nothing new (the key is the event id and
//! its time, both fixed by the producer).

use crate::db::in_tx;
use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use novyra_core::EvaluationLogged;
use serde_json::Value;

use crate::partitions::month_start;
use crate::schema::evaluation_logs;
use crate::{ts, Store, StoreError};

/// One consumed evaluation and where it came from.
#[derive(Debug, Clone)]
pub struct EvaluationRecord {
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// The writer's schema id.
    pub schema_id: i32,
    /// The event, validated: its documents parse as JSON.
    pub evaluation: EvaluationLogged,
}

#[derive(Insertable)]
#[diesel(table_name = evaluation_logs)]
struct NewEvaluation<'a> {
    event_id: &'a str,
    occurred_at: DateTime<Utc>,
    user_id: &'a str,
    concept_id: Option<&'a str>,
    attempt_event_id: Option<&'a str>,
    model: &'a str,
    prompt: Value,
    response: Value,
    rubric: Option<Value>,
    source_partition: i32,
    source_offset: i64,
    schema_id: i32,
}

/// A stored evaluation, as analysts read it.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable)]
#[diesel(table_name = evaluation_logs)]
pub struct EvaluationRow {
    /// Event id.
    pub event_id: String,
    /// When it ran.
    pub occurred_at: DateTime<Utc>,
    /// Student.
    pub user_id: String,
    /// Concept, if any.
    pub concept_id: Option<String>,
    /// Attempt, if any.
    pub attempt_event_id: Option<String>,
    /// Model.
    pub model: String,
    /// The prompt document.
    pub prompt: Value,
    /// The response document.
    pub response: Value,
    /// The rubric document, if any.
    pub rubric: Option<Value>,
}

/// Which document a containment query looks in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Document {
    /// What the model was asked.
    Prompt,
    /// What it answered.
    Response,
    /// The rubric scores.
    Rubric,
}

/// Why a record cannot be stored although it passed validation: a document
/// is not JSON after all (validation and this parse use the same parser,
/// so it does not happen unless they drift).
fn parse(field: &str, text: &str) -> Result<Value, StoreError> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Invalid(format!("evaluation {field} is not JSON: {e}")))
}

/// Postgres allows 65,535 bind parameters per statement; a row has 12.
const INSERT_CHUNK: usize = 5_000;

impl Store {
    /// Inserts evaluations in one transaction, skipping those already
    /// stored; returns how many were new. Month partitions must exist (see
    /// [`Store::ensure_month_partitions`]) or rows land in DEFAULT.
    pub async fn insert_evaluations(
        &self,
        records: &[EvaluationRecord],
    ) -> Result<usize, StoreError> {
        let mut rows = Vec::with_capacity(records.len());
        for r in records {
            let e = &r.evaluation;
            rows.push(NewEvaluation {
                event_id: &e.event_id,
                occurred_at: ts(e.occurred_at),
                user_id: &e.user_id,
                concept_id: e.concept_id.as_deref(),
                attempt_event_id: e.attempt_event_id.as_deref(),
                model: &e.model,
                prompt: parse("prompt", &e.prompt)?,
                response: parse("response", &e.response)?,
                rubric: e
                    .rubric
                    .as_deref()
                    .map(|r| parse("rubric", r))
                    .transpose()?,
                source_partition: r.partition,
                source_offset: r.offset,
                schema_id: r.schema_id,
            });
        }
        in_tx!(self, |c| {
            let mut inserted = 0;
            for chunk in rows.chunks(INSERT_CHUNK) {
                inserted += diesel::insert_into(evaluation_logs::table)
                    .values(chunk)
                    .on_conflict_do_nothing()
                    .execute(c)
                    .await?;
            }
            Ok(inserted)
        })
    }

    /// The newest `limit` evaluations whose `doc` contains `pattern`
    /// (JSONB `@>`, served by the document's GIN index).
    pub async fn evaluations_containing(
        &self,
        doc: Document,
        pattern: &Value,
        limit: i64,
    ) -> Result<Vec<EvaluationRow>, StoreError> {
        use evaluation_logs::dsl as e;
        in_tx!(self, |c| {
            let q = e::evaluation_logs
                .select(EvaluationRow::as_select())
                .order(e::occurred_at.desc())
                .limit(limit)
                .into_boxed();
            let q = match doc {
                Document::Prompt => q.filter(e::prompt.contains(pattern)),
                Document::Response => q.filter(e::response.contains(pattern)),
                Document::Rubric => q.filter(e::rubric.contains(pattern)),
            };
            Ok(q.load(c).await?)
        })
    }
}

/// The months `records` fall in.
pub fn months_of(records: &[EvaluationRecord]) -> Vec<NaiveDate> {
    let mut months: Vec<NaiveDate> = records
        .iter()
        .map(|r| month_start(ts(r.evaluation.occurred_at).date_naive()))
        .collect();
    months.sort_unstable();
    months.dedup();
    months
}
