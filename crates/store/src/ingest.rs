//! The ingest transaction: one Kafka batch of attempts becomes, atomically,
//! attempt rows (deduplicated by event id), rubric rows, the updated
//! `mastery_records`, outbox rows for the mastery topic, and the consumer
//! offsets the batch advanced to. Either all of it is visible or none.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use novyra_core::{BktParams, ConceptAttempted, MasteryState};

use crate::schema::{
    concept_attempts, concepts, consumer_offsets, mastery_outbox, mastery_records,
    rubric_evaluations,
};
use crate::{ts, Store, StoreError};

/// One decoded, validated attempt with its Kafka coordinates.
#[derive(Debug, Clone)]
pub struct IngestRecord {
    /// Source partition.
    pub partition: i32,
    /// Source offset.
    pub offset: i64,
    /// Registry id of the writer schema.
    pub schema_id: i32,
    /// The attempt.
    pub attempt: ConceptAttempted,
}

/// How far a batch advances one partition: from `start` (the offset stored
/// in Postgres when the batch began; `None` if the partition has no row yet)
/// to `next` (one past the last offset in the batch, DLQ'd records included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetAdvance {
    /// Partition.
    pub partition: i32,
    /// Stored offset the batch started from.
    pub start: Option<i64>,
    /// Offset to store.
    pub next: i64,
}

/// A batch for one topic, records in (partition, offset) order.
#[derive(Debug, Clone, Default)]
pub struct AttemptBatch {
    /// Consumer group.
    pub group: String,
    /// Source topic.
    pub topic: String,
    /// Records.
    pub records: Vec<IngestRecord>,
    /// Offset advance per partition.
    pub advances: Vec<OffsetAdvance>,
}

/// What a committed batch did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct IngestOutcome {
    /// Attempt rows inserted.
    pub inserted: usize,
    /// Records skipped as already stored (redelivery or re-publish).
    pub duplicates: usize,
    /// Mastery records changed.
    pub mastery_changed: usize,
}

#[derive(Insertable)]
#[diesel(table_name = concept_attempts)]
struct NewAttempt<'a> {
    event_id: &'a str,
    user_id: &'a str,
    concept_id: &'a str,
    occurred_at: DateTime<Utc>,
    correct: bool,
    hints_used: i32,
    duration_ms: i64,
    mastery_before: f64,
    mastery_after: f64,
    mastery_delta: f64,
    mastery_version: i64,
    bkt_p_init: f64,
    bkt_p_transit: f64,
    bkt_p_slip: f64,
    bkt_p_guess: f64,
    source_partition: i32,
    source_offset: i64,
    schema_id: i32,
}

#[derive(Insertable)]
#[diesel(table_name = rubric_evaluations)]
struct NewRubric<'a> {
    event_id: &'a str,
    occurred_at: DateTime<Utc>,
    user_id: &'a str,
    concept_id: &'a str,
    rubric_id: &'a str,
    weighted_total: f64,
    detail: serde_json::Value,
}

/// A `mastery_records` row.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = mastery_records)]
pub struct MasteryRow {
    /// Student.
    pub user_id: String,
    /// Concept.
    pub concept_id: String,
    /// P(L).
    pub mastery: f64,
    /// Attempts applied.
    pub attempts_total: i64,
    /// Correct attempts.
    pub attempts_correct: i64,
    /// Sum of 1/(1+hints).
    pub confidence_weight: f64,
    /// Version (= attempts applied).
    pub version: i64,
    /// Last event applied.
    pub last_event_id: String,
    /// Event time of the last attempt.
    pub updated_at: DateTime<Utc>,
}

impl MasteryRow {
    fn state(&self) -> MasteryState {
        MasteryState {
            mastery: self.mastery,
            attempts_total: self.attempts_total,
            attempts_correct: self.attempts_correct,
            confidence_weight: self.confidence_weight,
            last_event_id: self.last_event_id.clone(),
            updated_at: self.updated_at.timestamp_millis(),
        }
    }

    fn from_state(user_id: &str, concept_id: &str, s: &MasteryState) -> Self {
        Self {
            user_id: user_id.to_owned(),
            concept_id: concept_id.to_owned(),
            mastery: s.mastery,
            attempts_total: s.attempts_total,
            attempts_correct: s.attempts_correct,
            confidence_weight: s.confidence_weight,
            version: s.version(),
            last_event_id: s.last_event_id.clone(),
            updated_at: ts(s.updated_at),
        }
    }
}

#[derive(Insertable)]
#[diesel(table_name = mastery_outbox)]
struct NewOutbox<'a> {
    user_id: &'a str,
    concept_id: &'a str,
    mastery: f64,
    version: i64,
    attempts_total: i64,
    attempts_correct: i64,
    confidence_weight: f64,
    last_event_id: &'a str,
    updated_at: DateTime<Utc>,
}

/// Postgres allows 65,535 bind parameters per statement; attempt rows have 18.
const INSERT_CHUNK: usize = 2_000;

impl Store {
    /// Next offsets stored for `group` on `topic`, by partition.
    pub async fn stored_offsets(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<HashMap<i32, i64>, StoreError> {
        let mut c = self.conn().await?;
        let rows: Vec<(i32, i64)> = consumer_offsets::table
            .filter(consumer_offsets::group_id.eq(group))
            .filter(consumer_offsets::topic.eq(topic))
            .select((consumer_offsets::partition, consumer_offsets::next_offset))
            .load(&mut c)
            .await?;
        Ok(rows.into_iter().collect())
    }

    /// Commits one batch atomically; see the module doc. Fails with
    /// [`StoreError::Fenced`] (and changes nothing) if any partition's stored
    /// offset is no longer the one the batch started from.
    pub async fn commit_attempts(&self, batch: &AttemptBatch) -> Result<IngestOutcome, StoreError> {
        let mut c = self.conn().await?;
        c.transaction::<_, StoreError, _>(async |tx| apply_batch(tx, batch).await)
            .await
    }
}

/// The first day of each month the batch's attempts fall in.
pub fn months_of(records: &[IngestRecord]) -> Vec<NaiveDate> {
    let mut months: Vec<NaiveDate> = records
        .iter()
        .filter_map(|r| {
            let t = ts(r.attempt.occurred_at);
            NaiveDate::from_ymd_opt(t.year(), t.month(), 1)
        })
        .collect();
    months.sort_unstable();
    months.dedup();
    months
}

async fn fence(tx: &mut AsyncPgConnection, batch: &AttemptBatch) -> Result<(), StoreError> {
    for adv in &batch.advances {
        let n = match adv.start {
            Some(start) => {
                diesel::update(consumer_offsets::table)
                    .filter(consumer_offsets::group_id.eq(&batch.group))
                    .filter(consumer_offsets::topic.eq(&batch.topic))
                    .filter(consumer_offsets::partition.eq(adv.partition))
                    .filter(consumer_offsets::next_offset.eq(start))
                    .set((
                        consumer_offsets::next_offset.eq(adv.next),
                        consumer_offsets::updated_at.eq(diesel::dsl::now),
                    ))
                    .execute(tx)
                    .await?
            }
            None => {
                diesel::insert_into(consumer_offsets::table)
                    .values((
                        consumer_offsets::group_id.eq(&batch.group),
                        consumer_offsets::topic.eq(&batch.topic),
                        consumer_offsets::partition.eq(adv.partition),
                        consumer_offsets::next_offset.eq(adv.next),
                    ))
                    .on_conflict_do_nothing()
                    .execute(tx)
                    .await?
            }
        };
        if n != 1 {
            return Err(StoreError::Fenced {
                topic: batch.topic.clone(),
                partition: adv.partition,
                expected: adv.start,
            });
        }
    }
    Ok(())
}

async fn apply_batch(
    tx: &mut AsyncPgConnection,
    batch: &AttemptBatch,
) -> Result<IngestOutcome, StoreError> {
    fence(tx, batch).await?;
    let mut outcome = IngestOutcome::default();
    if batch.records.is_empty() {
        return Ok(outcome);
    }

    // Dedup against stored rows (retried publishes, redelivery after a crash).
    let ids: Vec<&str> = batch
        .records
        .iter()
        .map(|r| r.attempt.event_id.as_str())
        .collect();
    // NB: dedup by event id alone: a re-published event is the same event
    // even if its occurred_at differs (DESIGN.md), so no partition pruning.
    let stored: HashSet<String> = concept_attempts::table
        .filter(concept_attempts::event_id.eq_any(&ids))
        .select(concept_attempts::event_id)
        .load::<String>(tx)
        .await?
        .into_iter()
        .collect();

    // Parameters of the concepts in the batch; unknown concepts get the defaults.
    let concept_ids: Vec<&str> = {
        let mut v: Vec<&str> = batch
            .records
            .iter()
            .map(|r| r.attempt.concept_id.as_str())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let params: HashMap<String, BktParams> = concepts::table
        .filter(concepts::id.eq_any(&concept_ids))
        .select((
            concepts::id,
            concepts::bkt_p_init,
            concepts::bkt_p_transit,
            concepts::bkt_p_slip,
            concepts::bkt_p_guess,
        ))
        .load::<(String, f64, f64, f64, f64)>(tx)
        .await?
        .into_iter()
        .map(|(id, p_init, p_transit, p_slip, p_guess)| {
            (
                id,
                BktParams {
                    p_init,
                    p_transit,
                    p_slip,
                    p_guess,
                },
            )
        })
        .collect();

    // Current mastery of every (user, concept) in the batch.
    let users: Vec<&str> = {
        let mut v: Vec<&str> = batch
            .records
            .iter()
            .map(|r| r.attempt.user_id.as_str())
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    };
    let mut states: HashMap<(String, String), MasteryState> = mastery_records::table
        .filter(mastery_records::user_id.eq_any(&users))
        .filter(mastery_records::concept_id.eq_any(&concept_ids))
        .select(MasteryRow::as_select())
        .load::<MasteryRow>(tx)
        .await?
        .into_iter()
        .map(|r| ((r.user_id.clone(), r.concept_id.clone()), r.state()))
        .collect();

    // Apply in Kafka order. One user's attempts share a partition (the key is
    // the user id), so this is each user's true order.
    let mut seen: HashSet<&str> = HashSet::with_capacity(batch.records.len());
    let mut rows = Vec::with_capacity(batch.records.len());
    let mut rubrics = Vec::new();
    let mut changed: Vec<(String, String)> = Vec::new();
    for r in &batch.records {
        let a = &r.attempt;
        if stored.contains(&a.event_id) || !seen.insert(a.event_id.as_str()) {
            outcome.duplicates += 1;
            continue;
        }
        let p = params.get(&a.concept_id).copied().unwrap_or_default();
        let key = (a.user_id.clone(), a.concept_id.clone());
        let state = match states.entry(key.clone()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(MasteryState::initial(&p)),
        };
        changed.push(key);
        let applied = state.apply(a, &p);
        rows.push(NewAttempt {
            event_id: &a.event_id,
            user_id: &a.user_id,
            concept_id: &a.concept_id,
            occurred_at: ts(a.occurred_at),
            correct: a.correct,
            hints_used: a.hints_used,
            duration_ms: a.duration_ms,
            mastery_before: applied.before,
            mastery_after: applied.after,
            mastery_delta: applied.after - applied.before,
            mastery_version: applied.version,
            bkt_p_init: p.p_init,
            bkt_p_transit: p.p_transit,
            bkt_p_slip: p.p_slip,
            bkt_p_guess: p.p_guess,
            source_partition: r.partition,
            source_offset: r.offset,
            schema_id: r.schema_id,
        });
        if let Some(rb) = &a.rubric {
            rubrics.push(NewRubric {
                event_id: &a.event_id,
                occurred_at: ts(a.occurred_at),
                user_id: &a.user_id,
                concept_id: &a.concept_id,
                rubric_id: &rb.rubric_id,
                weighted_total: rb.weighted_total,
                detail: serde_json::json!({ "criteria": rb.criteria.iter().map(|c| serde_json::json!({
                    "name": c.name, "score": c.score, "weight": c.weight })).collect::<Vec<_>>() }),
            });
        }
    }

    for chunk in rows.chunks(INSERT_CHUNK) {
        outcome.inserted += diesel::insert_into(concept_attempts::table)
            .values(chunk)
            .execute(tx)
            .await?;
    }
    for chunk in rubrics.chunks(INSERT_CHUNK) {
        diesel::insert_into(rubric_evaluations::table)
            .values(chunk)
            .on_conflict_do_nothing()
            .execute(tx)
            .await?;
    }

    changed.sort_unstable();
    changed.dedup();
    let mastery: Vec<MasteryRow> = changed
        .iter()
        .filter_map(|k| states.get(k).map(|s| MasteryRow::from_state(&k.0, &k.1, s)))
        .collect();
    outcome.mastery_changed = mastery.len();
    for chunk in mastery.chunks(INSERT_CHUNK) {
        diesel::insert_into(mastery_records::table)
            .values(chunk)
            .on_conflict((mastery_records::user_id, mastery_records::concept_id))
            .do_update()
            .set((
                mastery_records::mastery.eq(excluded(mastery_records::mastery)),
                mastery_records::attempts_total.eq(excluded(mastery_records::attempts_total)),
                mastery_records::attempts_correct.eq(excluded(mastery_records::attempts_correct)),
                mastery_records::confidence_weight.eq(excluded(mastery_records::confidence_weight)),
                mastery_records::version.eq(excluded(mastery_records::version)),
                mastery_records::last_event_id.eq(excluded(mastery_records::last_event_id)),
                mastery_records::updated_at.eq(excluded(mastery_records::updated_at)),
            ))
            .execute(tx)
            .await?;
        let outbox: Vec<NewOutbox<'_>> = chunk
            .iter()
            .map(|m| NewOutbox {
                user_id: &m.user_id,
                concept_id: &m.concept_id,
                mastery: m.mastery,
                version: m.version,
                attempts_total: m.attempts_total,
                attempts_correct: m.attempts_correct,
                confidence_weight: m.confidence_weight,
                last_event_id: &m.last_event_id,
                updated_at: m.updated_at,
            })
            .collect();
        diesel::insert_into(mastery_outbox::table)
            .values(&outbox)
            .execute(tx)
            .await?;
    }
    Ok(outcome)
}
