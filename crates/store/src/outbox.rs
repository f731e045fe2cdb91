//! The outbox relay's side in Postgres. One relay at a time holds the
//! relay lease, a session-level advisory lock on a connection of its own,
//! so each key's updates reach the topic in commit order even with several
//! ingest processes running: a key's next update can only be written after
//! its previous one committed (the offset fence, or the row lock of a
//! recomputation), so it always gets the higher outbox id.
//!
//! No transaction stays open while the relay waits on Kafka: rows are read,
//! published, then deleted by id in statements of their own. The lease's
//! connection is never pooled, since a pooled session would keep the lock
//! after being handed back; when it breaks, Postgres releases the lock and
//! another relay may take over.

use crate::db::{in_tx, within};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use novyra_core::MasteryUpdated;

use crate::schema::mastery_outbox;
use crate::{Store, StoreError};

/// Advisory-lock key of the relay, per schema: pipelines in other schemas
/// of the same database (tests, a second tenant) each have their own
/// outbox and must not wait for each other's relay.
const RELAY_LOCK_KEY: &str = "hashtext(current_schema() || ':novyra_relay')";

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    locked: bool,
}

/// The right to relay: see the module doc. Dropping it releases it.
pub struct RelayLease {
    conn: AsyncPgConnection,
    /// The store's transaction deadline, for each statement here too: a
    /// statement past it fails, and the relay then drops the lease, which
    /// closes the connection (and so releases the lock).
    timeout: std::time::Duration,
}

impl std::fmt::Debug for RelayLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RelayLease")
    }
}

/// One mastery change waiting in the outbox.
#[derive(Debug, Clone)]
pub struct Queued {
    /// Outbox id: commit order per key, and what [`RelayLease::delete`] takes.
    pub id: i64,
    /// The change.
    pub event: MasteryUpdated,
    /// W3C `traceparent` of the transaction that queued it, for the
    /// record's header (None when tracing was off).
    pub traceparent: Option<String>,
    /// Kafka timestamp (ms) of the oldest attempt the change applies, for
    /// the record's `novyra-source-ts` header (None for a recomputation).
    pub source_ts: Option<i64>,
}

impl RelayLease {
    /// Up to `limit` committed outbox rows in id order.
    pub async fn take(&mut self, limit: i64) -> Result<Vec<Queued>, StoreError> {
        let rows: Vec<OutboxRow> = within(
            self.timeout,
            "reading the outbox",
            mastery_outbox::table
                .order(mastery_outbox::id)
                .limit(limit)
                .select(OutboxRow::as_select())
                .load(&mut self.conn),
        )
        .await?;
        Ok(rows.into_iter().map(OutboxRow::into_queued).collect())
    }

    /// Deletes the rows relayed; call only once Kafka acknowledged every one.
    /// NB: exactly those ids, never an id range: ids come from a sequence,
    /// so a concurrent ingest transaction can commit a lower id after the
    /// read, and a range delete would drop it unpublished.
    pub async fn delete(&mut self, ids: &[i64]) -> Result<usize, StoreError> {
        within(
            self.timeout,
            "deleting relayed outbox rows",
            diesel::delete(mastery_outbox::table.filter(mastery_outbox::id.eq_any(ids)))
                .execute(&mut self.conn),
        )
        .await
    }
}

impl Store {
    /// Tries to become the relay; `None` while another process is.
    pub async fn relay_lease(&self) -> Result<Option<RelayLease>, StoreError> {
        let mut conn = within(
            self.transaction_timeout,
            "connecting for the relay lease",
            self.session.session_conn(),
        )
        .await?;
        let got: Vec<Locked> = within(
            self.transaction_timeout,
            "taking the relay lease",
            diesel::sql_query(format!(
                "SELECT pg_try_advisory_lock({RELAY_LOCK_KEY}) AS locked"
            ))
            .load(&mut conn),
        )
        .await?;
        Ok(<[_]>::first(&got)
            .is_some_and(|l| l.locked)
            .then_some(RelayLease {
                conn,
                timeout: self.transaction_timeout,
            }))
    }

    /// (user, concept) keys with a row still waiting in the outbox: their
    /// newest value is on its way to the topic already.
    pub async fn outbox_pending_keys(
        &self,
    ) -> Result<std::collections::HashSet<(String, String)>, StoreError> {
        in_tx!(self, |c| {
            Ok(mastery_outbox::table
                .select((mastery_outbox::user_id, mastery_outbox::concept_id))
                .distinct()
                .load::<(String, String)>(c)
                .await?
                .into_iter()
                .collect())
        })
    }

    /// Empties the outbox: after a replay into another schema its rows are
    /// updates the live mastery topic already has.
    pub async fn clear_outbox(&self) -> Result<usize, StoreError> {
        in_tx!(self, |c| {
            Ok(diesel::delete(mastery_outbox::table).execute(c).await?)
        })
    }

    /// Rows waiting in the outbox.
    pub async fn outbox_len(&self) -> Result<i64, StoreError> {
        in_tx!(self, |c| {
            Ok(mastery_outbox::table.count().get_result(c).await?)
        })
    }
}

#[derive(Queryable, Selectable)]
#[diesel(table_name = mastery_outbox)]
struct OutboxRow {
    id: i64,
    user_id: String,
    concept_id: String,
    mastery: f64,
    version: i64,
    attempts_total: i64,
    attempts_correct: i64,
    confidence_weight: f64,
    last_event_id: String,
    updated_at: chrono::DateTime<chrono::Utc>,
    traceparent: Option<String>,
    source_ts: Option<chrono::DateTime<chrono::Utc>>,
}

impl OutboxRow {
    fn into_queued(self) -> Queued {
        let (id, traceparent) = (self.id, self.traceparent.clone());
        let source_ts = self.source_ts.map(|t| t.timestamp_millis());
        Queued {
            id,
            traceparent,
            source_ts,
            event: self.into_event(),
        }
    }

    fn into_event(self) -> MasteryUpdated {
        MasteryUpdated {
            user_id: self.user_id,
            concept_id: self.concept_id,
            mastery: self.mastery,
            version: self.version,
            attempts_total: self.attempts_total,
            attempts_correct: self.attempts_correct,
            confidence_weight: self.confidence_weight,
            last_event_id: self.last_event_id,
            updated_at: self.updated_at.timestamp_millis(),
        }
    }
}
