//! The outbox relay's side in Postgres. One relay at a time holds a
//! transaction-scoped advisory lock, so each key's updates reach the topic
//! in commit order even with several ingest processes running: a key's
//! next update can only be written after its previous batch committed (the
//! offset fence), so it always gets the higher outbox id.

use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use novyra_core::MasteryUpdated;

use crate::schema::mastery_outbox;
use crate::{Store, StoreError};

/// Advisory-lock key of the relay ("novyra" in ASCII, truncated).
const RELAY_LOCK: i64 = 0x6e6f_7679_7261;

#[derive(QueryableByName)]
struct Locked {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    locked: bool,
}

impl Store {
    /// Takes up to `limit` committed outbox rows in id order, hands them to
    /// `publish` (which must return only once Kafka acknowledged every one),
    /// then deletes them, all inside one transaction holding the relay lock.
    /// Returns how many were relayed; 0 when another relay holds the lock.
    /// If `publish` fails nothing is deleted and the rows are retried: the
    /// topic may then see a record twice, which version-guarded consumers
    /// absorb.
    pub async fn relay_outbox<F, Fut, E>(
        &self,
        limit: i64,
        publish: F,
    ) -> Result<usize, RelayError<E>>
    where
        F: FnOnce(Vec<MasteryUpdated>) -> Fut + Send,
        Fut: std::future::Future<Output = Result<(), E>> + Send,
        E: Send,
    {
        let mut c = self.conn().await.map_err(RelayError::Store)?;
        c.transaction::<_, RelayError<E>, _>(async |tx| {
            let got: Vec<Locked> =
                diesel::sql_query("SELECT pg_try_advisory_xact_lock($1) AS locked")
                    .bind::<diesel::sql_types::BigInt, _>(RELAY_LOCK)
                    .load(tx)
                    .await
                    .map_err(|e| RelayError::Store(e.into()))?;
            if !<[_]>::first(&got).is_some_and(|l| l.locked) {
                return Ok(0);
            }
            let rows: Vec<OutboxRow> = mastery_outbox::table
                .order(mastery_outbox::id)
                .limit(limit)
                .select(OutboxRow::as_select())
                .load(tx)
                .await
                .map_err(|e| RelayError::Store(e.into()))?;
            if rows.is_empty() {
                return Ok(0);
            }
            // NB: delete exactly the rows published, never an id range: ids
            // come from a sequence, so a concurrent ingest transaction can
            // commit a lower id after this SELECT, and a range delete (which
            // takes a fresh snapshot) would drop it unpublished.
            let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
            let n = rows.len();
            let events = rows.into_iter().map(OutboxRow::into_event).collect();
            publish(events).await.map_err(RelayError::Publish)?;
            diesel::delete(mastery_outbox::table.filter(mastery_outbox::id.eq_any(&ids)))
                .execute(tx)
                .await
                .map_err(|e| RelayError::Store(e.into()))?;
            Ok(n)
        })
        .await
    }

    /// (user, concept) keys with a row still waiting in the outbox: their
    /// newest value is on its way to the topic already.
    pub async fn outbox_pending_keys(
        &self,
    ) -> Result<std::collections::HashSet<(String, String)>, StoreError> {
        let mut c = self.conn().await?;
        Ok(mastery_outbox::table
            .select((mastery_outbox::user_id, mastery_outbox::concept_id))
            .distinct()
            .load::<(String, String)>(&mut c)
            .await?
            .into_iter()
            .collect())
    }

    /// Empties the outbox: after a replay into another schema its rows are
    /// updates the live mastery topic already has.
    pub async fn clear_outbox(&self) -> Result<usize, StoreError> {
        let mut c = self.conn().await?;
        Ok(diesel::delete(mastery_outbox::table)
            .execute(&mut c)
            .await?)
    }

    /// Rows waiting in the outbox.
    pub async fn outbox_len(&self) -> Result<i64, StoreError> {
        let mut c = self.conn().await?;
        Ok(mastery_outbox::table.count().get_result(&mut c).await?)
    }
}

/// A relay failure: the store's, or the publisher's.
#[derive(Debug, thiserror::Error)]
pub enum RelayError<E> {
    /// Postgres failed.
    #[error(transparent)]
    Store(StoreError),
    /// Publishing failed; nothing was deleted.
    #[error("publish failed")]
    Publish(E),
}

impl<E> From<diesel::result::Error> for RelayError<E> {
    fn from(e: diesel::result::Error) -> Self {
        RelayError::Store(e.into())
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
}

impl OutboxRow {
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
