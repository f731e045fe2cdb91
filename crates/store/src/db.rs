//! Connections and migrations.

use diesel_async::pooled_connection::deadpool::Pool;
use diesel_async::pooled_connection::{AsyncDieselConnectionManager, ManagerConfig};
use diesel_async::{AsyncMigrationHarness, AsyncPgConnection, RunQueryDsl};
use futures::FutureExt;

use crate::connect::establish;
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use crate::StoreError;

const MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations");

/// Where the database is.
#[derive(Clone)]
pub struct StoreConfig {
    /// libpq-style URL; may carry credentials, so it is never logged.
    pub url: String,
    /// Schema to use instead of the role's default (tests, side-by-side replays).
    pub schema: Option<String>,
    /// Pool size.
    pub max_connections: usize,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .finish_non_exhaustive()
    }
}

impl StoreConfig {
    /// The URL with `search_path` pinned to `schema` when one is set.
    fn effective_url(&self) -> String {
        match &self.schema {
            None => self.url.clone(),
            Some(s) => {
                let sep = if self.url.contains('?') { '&' } else { '?' };
                format!("{}{sep}options=-c%20search_path%3D{s}", self.url)
            }
        }
    }
}

/// A pool of connections.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: Pool<AsyncPgConnection>,
    /// For the connections that must not come from the pool (the relay
    /// lease); holds credentials, never logged.
    pub(crate) url: String,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store")
    }
}

impl Store {
    /// Builds the pool; connections are made lazily, so a down server shows
    /// up on first use (and in readiness), not here.
    pub fn new(cfg: &StoreConfig) -> Result<Self, StoreError> {
        let url = cfg.effective_url();
        let mut setup = ManagerConfig::<AsyncPgConnection>::default();
        setup.custom_setup = Box::new(|url| establish(url).boxed());
        let mgr =
            AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url.clone(), setup);
        let pool = Pool::builder(mgr)
            .max_size(cfg.max_connections.max(1))
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self { pool, url })
    }

    /// A pooled connection.
    pub async fn conn(
        &self,
    ) -> Result<diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>, StoreError>
    {
        Ok(self.pool.get().await?)
    }

    /// `SELECT 1`, for readiness.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut c = self.conn().await?;
        diesel::sql_query("SELECT 1").execute(&mut c).await?;
        Ok(())
    }
}

/// Creates the schema if one is named, then runs pending migrations.
/// Returns the versions applied.
pub async fn migrate(cfg: &StoreConfig) -> Result<Vec<String>, StoreError> {
    if let Some(schema) = &cfg.schema {
        let mut c = establish(&cfg.url)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        diesel::sql_query(format!(
            "CREATE SCHEMA IF NOT EXISTS \"{}\"",
            schema.replace('"', "\"\"")
        ))
        .execute(&mut c)
        .await?;
    }
    with_harness(cfg, |h| {
        let done = h
            .run_pending_migrations(MIGRATIONS)
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        Ok(done.iter().map(|v| v.to_string()).collect())
    })
    .await
}

/// Drops the configured schema and everything in it (needs the owner role;
/// benchmarks and tests use it to clean up). Refuses without a schema, so
/// it can never touch the default one.
pub async fn drop_schema(cfg: &StoreConfig) -> Result<(), StoreError> {
    let Some(schema) = &cfg.schema else {
        return Err(StoreError::Migration("no schema named to drop".into()));
    };
    let mut c = establish(&cfg.url)
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    diesel::sql_query(format!(
        "DROP SCHEMA IF EXISTS \"{}\" CASCADE",
        schema.replace('"', "\"\"")
    ))
    .execute(&mut c)
    .await?;
    Ok(())
}

/// Reverts every migration (tests; a `db reset` command later).
pub async fn revert_all(cfg: &StoreConfig) -> Result<usize, StoreError> {
    with_harness(cfg, |h| {
        let done = h
            .revert_all_migrations(MIGRATIONS)
            .map_err(|e| StoreError::Migration(e.to_string()))?;
        Ok(done.len())
    })
    .await
}

/// Runs `f` on a migration harness over a fresh connection. Diesel's
/// harness is synchronous, so it runs on the blocking pool.
async fn with_harness<T: Send + 'static>(
    cfg: &StoreConfig,
    f: impl FnOnce(&mut AsyncMigrationHarness<AsyncPgConnection>) -> Result<T, StoreError>
        + Send
        + 'static,
) -> Result<T, StoreError> {
    let conn = establish(&cfg.effective_url())
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    tokio::task::spawn_blocking(move || f(&mut AsyncMigrationHarness::new(conn)))
        .await
        .map_err(|e| StoreError::Migration(e.to_string()))?
}
