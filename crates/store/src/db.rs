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
    /// A URL on which a connection keeps its server session (Postgres
    /// itself, or a session-mode pool), for the relay lease: it holds a
    /// session advisory lock, which a transaction-mode pooler such as
    /// PgBouncer would hand to whichever client gets that server next.
    /// `None`: `url` is direct. Credentials again, never logged.
    pub session_url: Option<String>,
    /// Schema to use instead of the role's default (tests, side-by-side replays).
    pub schema: Option<String>,
    /// Pool size.
    pub max_connections: usize,
    /// The longest one unit of work (one transaction on a pooled
    /// connection) may take. A transaction past it is abandoned: its
    /// connection is closed, so the server rolls it back, and the caller
    /// gets a retryable error. Without it a connection that never answers
    /// (a lost reply behind a pooler, a half-open socket) stalls a worker
    /// for good while it still looks healthy.
    pub transaction_timeout: std::time::Duration,
}

/// The default of [`StoreConfig::transaction_timeout`]: far above any
/// unit of work the pipeline does (a batch commits in milliseconds; the
/// largest read, reconcile's whole mastery table, takes seconds at a
/// million rows), so only a stuck one meets it.
pub const DEFAULT_TRANSACTION_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("transaction_timeout", &self.transaction_timeout)
            .finish_non_exhaustive()
    }
}

impl StoreConfig {
    /// A connection of its own (not pooled) on `url`, keeping its server
    /// session, with the schema set for that session.
    pub(crate) async fn session_conn(&self) -> Result<AsyncPgConnection, StoreError> {
        let mut c = establish(&self.url)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        if let Some(s) = &self.schema {
            diesel::sql_query("SELECT set_config('search_path', quote_ident($1), false)")
                .bind::<diesel::sql_types::Text, _>(s)
                .execute(&mut c)
                .await?;
        }
        Ok(c)
    }
}

/// Runs `$body`, with `$c` bound to a `&mut AsyncPgConnection` from the
/// store's pool, in one transaction that first pins the store's schema: the
/// only way a unit of work is safe behind a transaction-mode pooler. A
/// transaction that outlives the store's `transaction_timeout` is
/// abandoned ([`Store::abandon`]). Getting the connection has the same
/// deadline: it may have to connect, or ping a pooled connection
/// (deadpool's recycle check), and neither has a limit of its own.
macro_rules! in_tx {
    ($store:expr, |$c:ident| $body:expr) => {{
        use diesel_async::AsyncConnection as _;
        let store = $store;
        let mut conn = $crate::db::within(
            store.transaction_timeout,
            "taking a pooled connection",
            store.conn(),
        )
        .await?;
        let work = conn.transaction::<_, $crate::StoreError, _>(async |$c| {
            store.pin_schema($c).await?;
            $body
        });
        let finished = tokio::time::timeout(store.transaction_timeout, work).await;
        match finished {
            Ok(done) => done,
            Err(_) => Err(store.abandon(conn)),
        }
    }};
}
pub(crate) use in_tx;

/// Runs one step that talks to the server (a statement on the relay
/// lease's connection, connecting, taking a pooled connection) under the
/// store's deadline; past it, a retryable error. A caller holding a
/// connection the step ran on must drop it.
pub(crate) async fn within<T, E: Into<StoreError>>(
    timeout: std::time::Duration,
    what: &str,
    step: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(timeout, step).await {
        Ok(done) => done.map_err(Into::into),
        Err(_) => Err(StoreError::Unavailable(format!(
            "{what} ran past its deadline of {timeout:?} (database.transaction_timeout_ms)"
        ))),
    }
}

/// A pool of connections.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: Pool<AsyncPgConnection>,
    /// For the connection that must not come from the pool and must keep
    /// its server session (the relay lease); holds credentials, never logged.
    pub(crate) session: StoreConfig,
    /// Pinned per transaction (`SET LOCAL`), never per connection: behind
    /// a transaction-mode pooler consecutive transactions of one client
    /// run on different server sessions, and a session-level `SET` would
    /// stay behind on a server session that some other client gets next.
    /// (A startup `options=-c search_path` is no better: PgBouncer can only
    /// carry parameters the server reports, which Postgres < 18 does not
    /// for search_path.)
    pub(crate) schema: Option<String>,
    /// See [`StoreConfig::transaction_timeout`].
    pub(crate) transaction_timeout: std::time::Duration,
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
        let url = cfg.url.clone();
        let session = StoreConfig {
            url: cfg.session_url.clone().unwrap_or_else(|| cfg.url.clone()),
            ..cfg.clone()
        };
        let mut setup = ManagerConfig::<AsyncPgConnection>::default();
        setup.custom_setup = Box::new(|url| establish(url).boxed());
        let mgr =
            AsyncDieselConnectionManager::<AsyncPgConnection>::new_with_config(url.clone(), setup);
        let pool = Pool::builder(mgr)
            .max_size(cfg.max_connections.max(1))
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Self {
            pool,
            session,
            schema: cfg.schema.clone(),
            transaction_timeout: cfg.transaction_timeout,
        })
    }

    /// Takes a connection whose transaction ran past the deadline out of
    /// the pool and closes it: it may be waiting for a reply that never
    /// comes, and must not serve anyone again. Closing is also what makes
    /// the server (through PgBouncer too, which drops a server connection
    /// whose client left mid-transaction) roll the transaction back.
    /// Retrying is safe: every unit of work is idempotent, as it must be
    /// for redelivery after a crash, and a commit that did land before the
    /// deadline is found as such by the retry.
    pub(crate) fn abandon(
        &self,
        conn: diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>,
    ) -> StoreError {
        drop(diesel_async::pooled_connection::deadpool::Object::take(
            conn,
        ));
        tracing::warn!(
            timeout_ms = self.transaction_timeout.as_millis() as u64,
            "a postgres transaction ran past its deadline; its connection was closed"
        );
        StoreError::Unavailable(format!(
            "a transaction ran past its deadline of {:?} (database.transaction_timeout_ms); its connection was closed and the server rolls it back",
            self.transaction_timeout
        ))
    }

    /// A pooled connection. Crate-private: a unit of work on it must run
    /// in a transaction that starts with [`Store::pin_schema`] (`in_tx!`).
    pub(crate) async fn conn(
        &self,
    ) -> Result<diesel_async::pooled_connection::deadpool::Object<AsyncPgConnection>, StoreError>
    {
        Ok(self.pool.get().await?)
    }

    /// Sets the store's schema for the rest of the current transaction;
    /// every pooled unit of work starts with it (see `in_tx!`).
    pub(crate) async fn pin_schema(&self, c: &mut AsyncPgConnection) -> Result<(), StoreError> {
        if let Some(s) = &self.schema {
            diesel::sql_query("SELECT set_config('search_path', quote_ident($1), true)")
                .bind::<diesel::sql_types::Text, _>(s)
                .execute(c)
                .await?;
        }
        Ok(())
    }

    /// A connection of its own that keeps its server session (on
    /// `database.session_url` when set), schema set: for callers outside
    /// the store that run their own SQL (tests, the benchmark's baseline).
    pub async fn session(&self) -> Result<AsyncPgConnection, StoreError> {
        self.session.session_conn().await
    }

    /// `SELECT 1`, for readiness; in a transaction like any other unit of
    /// work, so a probe that gets no answer is bounded by the deadline and
    /// its connection closed rather than handed back to the pool.
    pub async fn ping(&self) -> Result<(), StoreError> {
        in_tx!(self, |c| {
            diesel::sql_query("SELECT 1").execute(c).await?;
            Ok(())
        })
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
    let conn = cfg.session_conn().await?;
    tokio::task::spawn_blocking(move || f(&mut AsyncMigrationHarness::new(conn)))
        .await
        .map_err(|e| StoreError::Migration(e.to_string()))?
}
