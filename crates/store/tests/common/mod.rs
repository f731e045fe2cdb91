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
        schema: Some(schema.to_owned()),
        max_connections: 2,
    }
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
