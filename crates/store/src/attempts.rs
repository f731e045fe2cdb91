//! The ingest transaction: one Kafka batch of attempts becomes, atomically,
//! attempt rows (deduplicated by event id), rubric rows, the updated
//! `mastery_records`, outbox rows for the mastery topic, and the consumer
//! offsets the batch advanced to. Either all of it is visible or none.

use crate::db::in_tx;
use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use novyra_core::{BktParams, ConceptAttempted, MasteryState};

use crate::schema::{concepts, consumer_offsets, mastery_records, rubric_evaluations};
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
    /// The record's Kafka timestamp (ms since the epoch), when it has one:
    /// where the graph's freshness is measured from (`mastery_outbox.source_ts`).
    pub kafka_ts: Option<i64>,
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
    /// W3C `traceparent` of the span this batch is written in, queued with
    /// its mastery changes so their records continue the trace (None when
    /// tracing is off).
    pub traceparent: Option<String>,
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

pub(crate) struct NewAttempt<'a> {
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
pub(crate) struct NewRubric<'a> {
    event_id: &'a str,
    occurred_at: DateTime<Utc>,
    user_id: &'a str,
    concept_id: &'a str,
    rubric_id: &'a str,
    weighted_total: f64,
    detail: serde_json::Value,
}

/// A `mastery_records` row.
#[derive(Debug, Clone, PartialEq, Queryable, QueryableByName, Selectable, Insertable)]
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
    /// Version: attempts applied plus recomputations (only grows).
    pub version: i64,
    /// Last event applied.
    pub last_event_id: String,
    /// Event time of the last attempt.
    pub updated_at: DateTime<Utc>,
}

impl MasteryRow {
    /// The running state this row stores.
    pub fn state(&self) -> MasteryState {
        MasteryState {
            mastery: self.mastery,
            attempts_total: self.attempts_total,
            attempts_correct: self.attempts_correct,
            confidence_weight: self.confidence_weight,
            last_event_id: self.last_event_id.clone(),
            updated_at: self.updated_at.timestamp_millis(),
            version: self.version,
        }
    }

    /// The row storing `s` for (user, concept).
    pub fn from_state(user_id: &str, concept_id: &str, s: &MasteryState) -> Self {
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

/// Postgres allows 65,535 bind parameters per statement; rubric rows have 7.
const INSERT_CHUNK: usize = 2_000;

impl Store {
    /// Next offsets stored for `group` on `topic`, by partition.
    pub async fn stored_offsets(
        &self,
        group: &str,
        topic: &str,
    ) -> Result<HashMap<i32, i64>, StoreError> {
        in_tx!(self, |c| {
            let rows: Vec<(i32, i64)> = consumer_offsets::table
                .filter(consumer_offsets::group_id.eq(group))
                .filter(consumer_offsets::topic.eq(topic))
                .select((consumer_offsets::partition, consumer_offsets::next_offset))
                .load(c)
                .await?;
            Ok(rows.into_iter().collect())
        })
    }

    /// Commits one batch atomically; see the module doc. Fails with
    /// [`StoreError::Fenced`] (and changes nothing) if any partition's stored
    /// offset is no longer the one the batch started from.
    pub async fn commit_attempts(&self, batch: &AttemptBatch) -> Result<IngestOutcome, StoreError> {
        in_tx!(self, |tx| apply_batch(tx, batch).await)
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

#[derive(QueryableByName)]
struct Moved {
    #[diesel(sql_type = diesel::sql_types::Integer)]
    partition: i32,
}

/// Moves every partition's stored offset from where the batch started to
/// where it ends, or fails with [`StoreError::Fenced`] naming a partition
/// another consumer moved first. Partitions Postgres already tracks move in
/// one statement: a lane spans about half the topic's partitions, and a
/// statement per partition made the fence the most frequent round trip of
/// a light load's small transactions. Two writers of overlapping
/// partitions (a rebalance in flight) meet on the row locks: the one that
/// waited re-reads each row it waited for and, finding it moved, is fenced.
/// The partitions go in sorted, so both normally lock in the same order; a
/// deadlock all the same is retried like any other.
async fn fence(tx: &mut AsyncPgConnection, batch: &AttemptBatch) -> Result<(), StoreError> {
    use diesel::sql_types::{Array, BigInt, Integer, Text};
    let mut tracked: Vec<(i32, i64, i64)> = batch
        .advances
        .iter()
        .filter_map(|a| a.start.map(|s| (a.partition, s, a.next)))
        .collect();
    tracked.sort_unstable();
    if !tracked.is_empty() {
        let moved: Vec<Moved> = diesel::sql_query(
            "UPDATE consumer_offsets AS o \
             SET next_offset = a.next, updated_at = CURRENT_TIMESTAMP \
             FROM unnest($3::int4[], $4::int8[], $5::int8[]) AS a(partition, start, next) \
             WHERE o.group_id = $1 AND o.topic = $2 \
               AND o.partition = a.partition AND o.next_offset = a.start \
             RETURNING o.partition",
        )
        .bind::<Text, _>(&batch.group)
        .bind::<Text, _>(&batch.topic)
        .bind::<Array<Integer>, _>(tracked.iter().map(|t| t.0).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(tracked.iter().map(|t| t.1).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(tracked.iter().map(|t| t.2).collect::<Vec<_>>())
        .load(tx)
        .await?;
        let moved: HashSet<i32> = moved.into_iter().map(|m| m.partition).collect();
        if let Some(&(partition, start, _)) = tracked.iter().find(|t| !moved.contains(&t.0)) {
            return Err(StoreError::Fenced {
                topic: batch.topic.clone(),
                partition,
                expected: Some(start),
            });
        }
    }
    for adv in batch.advances.iter().filter(|a| a.start.is_none()) {
        let n = diesel::insert_into(consumer_offsets::table)
            .values((
                consumer_offsets::group_id.eq(&batch.group),
                consumer_offsets::topic.eq(&batch.topic),
                consumer_offsets::partition.eq(adv.partition),
                consumer_offsets::next_offset.eq(adv.next),
            ))
            .on_conflict_do_nothing()
            .execute(tx)
            .await?;
        if n != 1 {
            return Err(StoreError::Fenced {
                topic: batch.topic.clone(),
                partition: adv.partition,
                expected: None,
            });
        }
    }
    Ok(())
}

async fn apply_batch(
    tx: &mut AsyncPgConnection,
    batch: &AttemptBatch,
) -> Result<IngestOutcome, StoreError> {
    // Held until commit: a concept's recomputation starts only once no
    // transaction that may have read its old parameters is open
    // (crate::recompute).
    diesel::sql_query(format!(
        "SELECT pg_advisory_xact_lock_shared({})",
        crate::recompute::PARAMS_LOCK_KEY
    ))
    .execute(tx)
    .await?;
    fence(tx, batch).await?;
    let mut outcome = IngestOutcome::default();
    if batch.records.is_empty() {
        return Ok(outcome);
    }

    // Dedup: claim each event id in `attempt_event_ids`; ids already there
    // (retried publishes, redelivery after a crash) are not returned. Ids
    // are claimed in sorted order so two lanes can never deadlock.
    // NB: by event id alone: a re-published event is the same event even if
    // its occurred_at differs (DESIGN.md).
    let mut claims: Vec<(&str, DateTime<Utc>)> = Vec::with_capacity(batch.records.len());
    {
        let mut first: HashSet<&str> = HashSet::with_capacity(batch.records.len());
        for r in &batch.records {
            if first.insert(r.attempt.event_id.as_str()) {
                claims.push((r.attempt.event_id.as_str(), ts(r.attempt.occurred_at)));
            }
        }
    }
    claims.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let fresh: HashSet<String> = claim_event_ids(tx, &claims).await?;

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

    // Current mastery of exactly the (user, concept) pairs in the batch.
    let mut pairs: Vec<(&str, &str)> = batch
        .records
        .iter()
        .map(|r| (r.attempt.user_id.as_str(), r.attempt.concept_id.as_str()))
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    let states: HashMap<(String, String), MasteryState> = load_mastery(tx, &pairs)
        .await?
        .into_iter()
        .map(|r| ((r.user_id.clone(), r.concept_id.clone()), r.state()))
        .collect();

    let plan = plan_batch(&batch.records, &fresh, &params, states);
    outcome.duplicates = plan.duplicates;
    let (rows, rubrics, mastery) = (plan.attempts, plan.rubrics, plan.mastery);

    outcome.inserted = insert_attempts(tx, &rows).await?;
    for chunk in rubrics.chunks(INSERT_CHUNK) {
        diesel::insert_into(rubric_evaluations::table)
            .values(chunk)
            .on_conflict_do_nothing()
            .execute(tx)
            .await?;
    }

    outcome.mastery_changed = write_mastery(
        tx,
        include_str!("sql/upsert_mastery.sql"),
        &mastery,
        &plan.mastery_since,
        batch.traceparent.as_deref(),
    )
    .await?;
    if outcome.mastery_changed != mastery.len() {
        // A recomputation replaced some of the rows read above.
        return Err(StoreError::Conflict(format!(
            "{} of {} mastery rows changed under the batch",
            mastery.len() - outcome.mastery_changed,
            mastery.len()
        )));
    }
    Ok(outcome)
}

/// What a batch writes, computed without I/O from the records, which of
/// their event ids are new, the concepts' parameters and the stored states
/// of the batch's pairs. Pure, so the replay-determinism property test
/// drives exactly this code.
pub struct BatchPlan<'a> {
    /// Attempt rows to insert, in Kafka order.
    pub(crate) attempts: Vec<NewAttempt<'a>>,
    /// Rubric rows to insert.
    pub(crate) rubrics: Vec<NewRubric<'a>>,
    /// The final mastery row of every pair the batch changed, by key.
    pub mastery: Vec<MasteryRow>,
    /// For each row of `mastery`, the Kafka timestamp of the oldest attempt
    /// the batch applied to it: its edge is as stale as that attempt.
    pub mastery_since: Vec<Option<DateTime<Utc>>>,
    /// Records skipped as already stored or repeated within the batch.
    pub duplicates: usize,
}

/// Applies `records` in Kafka order (see [`BatchPlan`]). One user's attempts
/// share a partition (the key is the user id), so this is each user's true
/// order; a concept missing from `params` is scored with the defaults.
pub fn plan_batch<'a>(
    records: &'a [IngestRecord],
    fresh: &HashSet<String>,
    params: &HashMap<String, BktParams>,
    mut states: HashMap<(String, String), MasteryState>,
) -> BatchPlan<'a> {
    let mut duplicates = 0;
    let mut seen: HashSet<&str> = HashSet::with_capacity(records.len());
    let mut rows = Vec::with_capacity(records.len());
    let mut rubrics = Vec::new();
    let mut changed: Vec<(String, String)> = Vec::new();
    let mut since: HashMap<(String, String), i64> = HashMap::new();
    for r in records {
        let a = &r.attempt;
        if !fresh.contains(&a.event_id) || !seen.insert(a.event_id.as_str()) {
            duplicates += 1;
            continue;
        }
        let p = params.get(&a.concept_id).copied().unwrap_or_default();
        let key = (a.user_id.clone(), a.concept_id.clone());
        let state = match states.entry(key.clone()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => e.insert(MasteryState::initial(&p)),
        };
        if let Some(t) = r.kafka_ts {
            since
                .entry(key.clone())
                .and_modify(|s| *s = (*s).min(t))
                .or_insert(t);
        }
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
    changed.sort_unstable();
    changed.dedup();
    let (mastery, mastery_since) = changed
        .iter()
        .filter_map(|k| {
            let row = MasteryRow::from_state(&k.0, &k.1, states.get(k)?);
            Some((row, since.get(k).map(|&t| ts(t))))
        })
        .unzip();
    BatchPlan {
        attempts: rows,
        rubrics,
        mastery,
        mastery_since,
        duplicates,
    }
}

/// Inserts attempt rows as column arrays (see `sql/insert_attempts.sql`).
async fn insert_attempts(
    tx: &mut AsyncPgConnection,
    rows: &[NewAttempt<'_>],
) -> Result<usize, StoreError> {
    use diesel::sql_types::{Array, BigInt, Bool, Double, Integer, Text, Timestamptz};
    if rows.is_empty() {
        return Ok(0);
    }
    let col = |f: fn(&NewAttempt<'_>) -> f64| rows.iter().map(f).collect::<Vec<f64>>();
    let n = diesel::sql_query(include_str!("sql/insert_attempts.sql"))
        .bind::<Array<Text>, _>(rows.iter().map(|r| r.event_id).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(rows.iter().map(|r| r.user_id).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(rows.iter().map(|r| r.concept_id).collect::<Vec<_>>())
        .bind::<Array<Timestamptz>, _>(rows.iter().map(|r| r.occurred_at).collect::<Vec<_>>())
        .bind::<Array<Bool>, _>(rows.iter().map(|r| r.correct).collect::<Vec<_>>())
        .bind::<Array<Integer>, _>(rows.iter().map(|r| r.hints_used).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(rows.iter().map(|r| r.duration_ms).collect::<Vec<_>>())
        .bind::<Array<Double>, _>(col(|r| r.mastery_before))
        .bind::<Array<Double>, _>(col(|r| r.mastery_after))
        .bind::<Array<Double>, _>(col(|r| r.mastery_delta))
        .bind::<Array<BigInt>, _>(rows.iter().map(|r| r.mastery_version).collect::<Vec<_>>())
        .bind::<Array<Double>, _>(col(|r| r.bkt_p_init))
        .bind::<Array<Double>, _>(col(|r| r.bkt_p_transit))
        .bind::<Array<Double>, _>(col(|r| r.bkt_p_slip))
        .bind::<Array<Double>, _>(col(|r| r.bkt_p_guess))
        .bind::<Array<Integer>, _>(rows.iter().map(|r| r.source_partition).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(rows.iter().map(|r| r.source_offset).collect::<Vec<_>>())
        .bind::<Array<Integer>, _>(rows.iter().map(|r| r.schema_id).collect::<Vec<_>>())
        .execute(tx)
        .await?;
    Ok(n)
}

/// Writes mastery rows and queues them in the outbox, in one statement
/// (`sql/upsert_mastery.sql` for the ingest, `sql/recompute_mastery.sql` for
/// a recomputation), each with its `since` (`mastery_outbox.source_ts`);
/// returns the rows written.
pub(crate) async fn write_mastery(
    tx: &mut AsyncPgConnection,
    sql: &str,
    rows: &[MasteryRow],
    since: &[Option<DateTime<Utc>>],
    traceparent: Option<&str>,
) -> Result<usize, StoreError> {
    debug_assert_eq!(rows.len(), since.len());
    use diesel::sql_types::{Array, BigInt, Double, Nullable, Text, Timestamptz};
    if rows.is_empty() {
        return Ok(0);
    }
    let n = diesel::sql_query(sql)
        .bind::<Array<Text>, _>(rows.iter().map(|r| r.user_id.as_str()).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(
            rows.iter()
                .map(|r| r.concept_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Double>, _>(rows.iter().map(|r| r.mastery).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(rows.iter().map(|r| r.attempts_total).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(rows.iter().map(|r| r.attempts_correct).collect::<Vec<_>>())
        .bind::<Array<Double>, _>(rows.iter().map(|r| r.confidence_weight).collect::<Vec<_>>())
        .bind::<Array<BigInt>, _>(rows.iter().map(|r| r.version).collect::<Vec<_>>())
        .bind::<Array<Text>, _>(
            rows.iter()
                .map(|r| r.last_event_id.as_str())
                .collect::<Vec<_>>(),
        )
        .bind::<Array<Timestamptz>, _>(rows.iter().map(|r| r.updated_at).collect::<Vec<_>>())
        .bind::<Nullable<Text>, _>(traceparent)
        .bind::<Array<Nullable<Timestamptz>>, _>(since)
        .execute(tx)
        .await?;
    Ok(n)
}

#[derive(QueryableByName)]
struct Claimed {
    #[diesel(sql_type = diesel::sql_types::Text)]
    event_id: String,
}

/// Inserts the event ids not seen before and returns them.
async fn claim_event_ids(
    tx: &mut AsyncPgConnection,
    claims: &[(&str, DateTime<Utc>)],
) -> Result<HashSet<String>, StoreError> {
    use diesel::sql_types::{Array, Text, Timestamptz};
    if claims.is_empty() {
        return Ok(HashSet::new());
    }
    let rows: Vec<Claimed> = diesel::sql_query(
        "INSERT INTO attempt_event_ids (event_id, occurred_at) \
         SELECT * FROM unnest($1::text[], $2::timestamptz[]) \
         ON CONFLICT (event_id) DO NOTHING RETURNING event_id",
    )
    .bind::<Array<Text>, _>(claims.iter().map(|c| c.0).collect::<Vec<_>>())
    .bind::<Array<Timestamptz>, _>(claims.iter().map(|c| c.1).collect::<Vec<_>>())
    .load(tx)
    .await?;
    Ok(rows.into_iter().map(|r| r.event_id).collect())
}

/// The stored mastery rows of `pairs`, one index probe per pair.
async fn load_mastery(
    tx: &mut AsyncPgConnection,
    pairs: &[(&str, &str)],
) -> Result<Vec<MasteryRow>, StoreError> {
    use diesel::sql_types::{Array, Text};
    if pairs.is_empty() {
        return Ok(Vec::new());
    }
    Ok(diesel::sql_query(
        "SELECT m.* FROM unnest($1::text[], $2::text[]) AS p(user_id, concept_id) \
         JOIN mastery_records m USING (user_id, concept_id)",
    )
    .bind::<Array<Text>, _>(pairs.iter().map(|p| p.0).collect::<Vec<_>>())
    .bind::<Array<Text>, _>(pairs.iter().map(|p| p.1).collect::<Vec<_>>())
    .load(tx)
    .await?)
}
