//! Read-only queries for summaries, checks and tests.

use crate::db::in_tx;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;

use crate::attempts::MasteryRow;
use crate::schema::{
    concept_attempts, concept_prerequisites, concepts, evaluation_logs, mastery_records,
    rubric_evaluations,
};
use crate::{Store, StoreError};

/// Row counts of the contract tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableCounts {
    /// `concepts`.
    pub concepts: i64,
    /// `concept_prerequisites`.
    pub concept_prerequisites: i64,
    /// `concept_attempts` (all partitions).
    pub concept_attempts: i64,
    /// `rubric_evaluations`.
    pub rubric_evaluations: i64,
    /// `mastery_records`.
    pub mastery_records: i64,
    /// `evaluation_logs` (all partitions).
    pub evaluation_logs: i64,
    /// Distinct (user, concept) pairs in `concept_attempts`.
    pub attempted_pairs: i64,
}

/// One stored attempt, as needed to recompute mastery independently.
#[derive(Debug, Clone, Queryable)]
pub struct AttemptAudit {
    /// Student.
    pub user_id: String,
    /// Concept.
    pub concept_id: String,
    /// Correct.
    pub correct: bool,
    /// Hints.
    pub hints_used: i32,
    /// Stored mastery before.
    pub mastery_before: f64,
    /// Stored mastery after.
    pub mastery_after: f64,
    /// Parameters used.
    pub params: (f64, f64, f64, f64),
}

impl Store {
    /// Counts every contract table.
    pub async fn table_counts(&self) -> Result<TableCounts, StoreError> {
        in_tx!(self, |c| {
            let pairs: i64 = concept_attempts::table
                .select(diesel::dsl::sql::<diesel::sql_types::BigInt>(
                    "count(DISTINCT (user_id, concept_id))",
                ))
                .get_result(c)
                .await?;
            Ok(TableCounts {
                concepts: concepts::table.count().get_result(c).await?,
                concept_prerequisites: concept_prerequisites::table.count().get_result(c).await?,
                concept_attempts: concept_attempts::table.count().get_result(c).await?,
                rubric_evaluations: rubric_evaluations::table.count().get_result(c).await?,
                mastery_records: mastery_records::table.count().get_result(c).await?,
                evaluation_logs: evaluation_logs::table.count().get_result(c).await?,
                attempted_pairs: pairs,
            })
        })
    }

    /// Every mastery row, ordered by key.
    pub async fn mastery_rows(&self) -> Result<Vec<MasteryRow>, StoreError> {
        in_tx!(self, |c| {
            Ok(mastery_records::table
                .order((mastery_records::user_id, mastery_records::concept_id))
                .select(MasteryRow::as_select())
                .load(c)
                .await?)
        })
    }

    /// How many mastery rows: sizes reconciliation's spill.
    pub async fn mastery_row_count(&self) -> Result<i64, StoreError> {
        in_tx!(self, |c| Ok(mastery_records::table
            .count()
            .get_result(c)
            .await?))
    }

    /// Up to `limit` mastery rows after the key `after` (`None`: from the
    /// start), in key order: reconciliation pages through the whole table
    /// with it instead of holding it in memory.
    pub async fn mastery_rows_after(
        &self,
        after: Option<(&str, &str)>,
        limit: i64,
    ) -> Result<Vec<MasteryRow>, StoreError> {
        use diesel::sql_types::{Bool, Text};
        let after = after.map(|(u, c)| (u.to_owned(), c.to_owned()));
        in_tx!(self, |conn| {
            let mut q = mastery_records::table
                .order((mastery_records::user_id, mastery_records::concept_id))
                .limit(limit)
                .select(MasteryRow::as_select())
                .into_boxed();
            if let Some((u, c)) = &after {
                // A row comparison, which walks the primary key index.
                q = q.filter(
                    diesel::dsl::sql::<Bool>("(user_id, concept_id) > (")
                        .bind::<Text, _>(u.clone())
                        .sql(", ")
                        .bind::<Text, _>(c.clone())
                        .sql(")"),
                );
            }
            Ok(q.load(conn).await?)
        })
    }

    /// The BKT parameters of every concept the catalogue holds now.
    pub async fn catalogue_params(
        &self,
    ) -> Result<std::collections::HashMap<String, novyra_core::BktParams>, StoreError> {
        use crate::schema::concepts;
        in_tx!(self, |c| {
            let rows: Vec<(String, f64, f64, f64, f64)> = concepts::table
                .select((
                    concepts::id,
                    concepts::bkt_p_init,
                    concepts::bkt_p_transit,
                    concepts::bkt_p_slip,
                    concepts::bkt_p_guess,
                ))
                .load(c)
                .await?;
            Ok(rows
                .into_iter()
                .map(|(id, p_init, p_transit, p_slip, p_guess)| {
                    (
                        id,
                        novyra_core::BktParams {
                            p_init,
                            p_transit,
                            p_slip,
                            p_guess,
                        },
                    )
                })
                .collect())
        })
    }

    /// Every stored attempt in the order mastery applied them: per
    /// (user, concept), by the version each one produced.
    pub async fn attempts_in_applied_order(&self) -> Result<Vec<AttemptAudit>, StoreError> {
        in_tx!(self, |c| {
            Ok(concept_attempts::table
                .order((
                    concept_attempts::user_id,
                    concept_attempts::concept_id,
                    concept_attempts::mastery_version,
                ))
                .select((
                    concept_attempts::user_id,
                    concept_attempts::concept_id,
                    concept_attempts::correct,
                    concept_attempts::hints_used,
                    concept_attempts::mastery_before,
                    concept_attempts::mastery_after,
                    (
                        concept_attempts::bkt_p_init,
                        concept_attempts::bkt_p_transit,
                        concept_attempts::bkt_p_slip,
                        concept_attempts::bkt_p_guess,
                    ),
                ))
                .load(c)
                .await?)
        })
    }
}

impl Store {
    /// Attempt rows of users whose id starts with `prefix` (one demo run).
    pub async fn attempts_with_user_prefix(&self, prefix: &str) -> Result<i64, StoreError> {
        in_tx!(self, |c| {
            Ok(concept_attempts::table
                .filter(concept_attempts::user_id.like(format!("{prefix}%")))
                .count()
                .get_result(c)
                .await?)
        })
    }
}

impl Store {
    /// Evaluation rows of users whose id starts with `prefix` (one demo run).
    pub async fn evaluations_with_user_prefix(&self, prefix: &str) -> Result<i64, StoreError> {
        in_tx!(self, |c| {
            Ok(evaluation_logs::table
                .filter(evaluation_logs::user_id.like(format!("{prefix}%")))
                .count()
                .get_result(c)
                .await?)
        })
    }
}

impl Store {
    /// Distinct writer-schema ids among stored attempts.
    pub async fn attempt_schema_ids(&self) -> Result<Vec<i32>, StoreError> {
        in_tx!(self, |c| {
            Ok(concept_attempts::table
                .select(concept_attempts::schema_id)
                .distinct()
                .order(concept_attempts::schema_id)
                .load(c)
                .await?)
        })
    }
}
