//! The analysts' read models (migration 000003): `concept_stats` and
//! `user_progress` are plain views; `leaderboard` is materialized and
//! refreshed here, on the ingest's schedule.

use crate::db::in_tx;
use chrono::{DateTime, Utc};
use diesel::sql_types::{BigInt, Double, Text, Timestamptz};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;

use crate::{Store, StoreError};

/// One student on the leaderboard, as of its last refresh.
#[derive(Debug, Clone, PartialEq, QueryableByName)]
pub struct LeaderboardRow {
    /// Dense rank: students with equal mastery share one.
    #[diesel(sql_type = BigInt)]
    pub rank: i64,
    /// Student.
    #[diesel(sql_type = Text)]
    pub user_id: String,
    /// Concepts at or above the mastery threshold.
    #[diesel(sql_type = BigInt)]
    pub concepts_mastered: i64,
    /// Concepts with any attempt.
    #[diesel(sql_type = BigInt)]
    pub concepts_attempted: i64,
    /// Mean mastery over the attempted concepts.
    #[diesel(sql_type = Double)]
    pub mean_mastery: f64,
    /// When the view was last refreshed: how stale the ranking is.
    #[diesel(sql_type = Timestamptz)]
    pub refreshed_at: DateTime<Utc>,
}

impl Store {
    /// `REFRESH MATERIALIZED VIEW CONCURRENTLY leaderboard`, through the
    /// owner's SECURITY DEFINER function (readers are never blocked).
    pub async fn refresh_leaderboard(&self) -> Result<(), StoreError> {
        in_tx!(self, |c| {
            diesel::sql_query("SELECT novyra_refresh_leaderboard()")
                .execute(c)
                .await?;
            Ok(())
        })
    }

    /// The top `limit` of the leaderboard. Meant for a read replica
    /// (`ANALYTICS_DATABASE_URL`): it reads only, so it works on a standby.
    pub async fn leaderboard(&self, limit: i64) -> Result<Vec<LeaderboardRow>, StoreError> {
        in_tx!(self, |c| {
            Ok(diesel::sql_query(
                "SELECT rank, user_id, concepts_mastered, concepts_attempted, mean_mastery, \
                 refreshed_at FROM leaderboard ORDER BY rank, user_id LIMIT $1",
            )
            .bind::<BigInt, _>(limit)
            .load(c)
            .await?)
        })
    }
}
