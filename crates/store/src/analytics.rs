//! The analysts' read models (migration 000003): `concept_stats` and
//! `user_progress` are plain views; `leaderboard` is materialized and
//! refreshed here, on the ingest's schedule.

use diesel_async::RunQueryDsl;

use crate::{Store, StoreError};

impl Store {
    /// `REFRESH MATERIALIZED VIEW CONCURRENTLY leaderboard`, through the
    /// owner's SECURITY DEFINER function (readers are never blocked).
    pub async fn refresh_leaderboard(&self) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        diesel::sql_query("SELECT novyra_refresh_leaderboard()")
            .execute(&mut c)
            .await?;
        Ok(())
    }
}
