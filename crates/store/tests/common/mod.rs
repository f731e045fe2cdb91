//! What the store's integration tests share.

#![allow(dead_code, missing_docs)]

use novyra_store::StoreConfig;

/// A store config for `schema`, connecting with the URL in `url_var`
/// (`DATABASE_URL` for the runtime role, `MIGRATION_DATABASE_URL` for the
/// owner; `make test` exports both).
pub fn cfg(url_var: &str, schema: &str) -> StoreConfig {
    StoreConfig {
        url: std::env::var(url_var)
            .unwrap_or_else(|_| panic!("{url_var} not set (run via `make test`)")),
        session_url: std::env::var("DATABASE_SESSION_URL")
            .ok()
            .filter(|_| url_var == "DATABASE_URL"),
        schema: Some(schema.to_owned()),
        max_connections: 2,
        transaction_timeout: novyra_store::DEFAULT_TRANSACTION_TIMEOUT,
    }
}

/// A schema of the test's own, `<prefix><pid>`, migrated by the owner
/// role: each test binary runs in its own schema so that tests can run
/// side by side against one database.
pub async fn migrated(prefix: &str) -> String {
    let schema = format!("{prefix}{}", std::process::id());
    novyra_store::migrate(&cfg("MIGRATION_DATABASE_URL", &schema))
        .await
        .expect("migrate");
    schema
}

/// The URL for a connection of the test's own that sets `search_path` for
/// its session: `DATABASE_SESSION_URL` when set (`DATABASE_URL` may go
/// through a transaction-mode pooler, where a session `SET` would reach
/// some other client), else `c.url`.
pub fn session_url(c: &StoreConfig) -> String {
    c.session_url.clone().unwrap_or_else(|| c.url.clone())
}

/// A file of the stack's throwaway CA (deploy/tls.sh), under
/// `NOVYRA_STACK_DIR` when set.
pub fn tls_file(name: &str) -> std::path::PathBuf {
    let stack = std::env::var("NOVYRA_STACK_DIR").map_or_else(
        |_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.stack"),
        std::path::PathBuf::from,
    );
    stack.join("tls").join(name)
}
