//! Postgres over TLS with libpq's `sslmode` semantics, against the local
//! stack's server (ssl=on, certificate for 127.0.0.1 and localhost from
//! deploy/tls.sh). Each case checks what the server saw in `pg_stat_ssl`.

mod common;

use diesel::sql_types::{Bool, Text};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use novyra_store::connect::establish;

#[derive(QueryableByName)]
struct Ssl {
    #[diesel(sql_type = Bool)]
    ssl: bool,
    #[diesel(sql_type = Text)]
    version: String,
}

/// Postgres itself (where migrations go), not PgBouncer: pg_stat_ssl
/// shows the TLS of the session the server has with this client.
fn url(params: &str) -> String {
    let base = std::env::var("MIGRATION_DATABASE_URL")
        .expect("MIGRATION_DATABASE_URL (run via `make test`)");
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}{params}")
}

fn ca(name: &str) -> String {
    common::tls_file(name).display().to_string()
}

/// Whether the server sees this session encrypted, and with what.
async fn session(url: &str) -> Result<(bool, String), String> {
    let mut c = establish(url).await.map_err(|e| e.to_string())?;
    let rows: Vec<Ssl> = diesel::sql_query(
        "SELECT ssl, coalesce(version, '') AS version FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
    )
    .load(&mut c)
    .await
    .map_err(|e| e.to_string())?;
    let r = rows.into_iter().next().expect("own session");
    Ok((r.ssl, r.version))
}

#[tokio::test]
async fn sslmode_is_honoured_as_libpq_does() {
    let root = ca("ca.crt");
    let other = ca("other-ca.crt");

    // verify-full with the stack's CA: encrypted, certificate and name checked.
    let (ssl, version) = session(&url(&format!("sslmode=verify-full&sslrootcert={root}")))
        .await
        .expect("verify-full");
    assert!(ssl && version.starts_with("TLSv1."), "{version}");

    // disable: in the clear; prefer (also the default): encrypted.
    assert!(!session(&url("sslmode=disable")).await.expect("disable").0);
    assert!(session(&url("sslmode=prefer")).await.expect("prefer").0);
    let plain = std::env::var("MIGRATION_DATABASE_URL").expect("MIGRATION_DATABASE_URL");
    assert!(
        session(&plain).await.expect("default").0,
        "libpq's default is prefer"
    );

    // require without a root certificate: encrypted, any certificate; with
    // one it checks the chain, as libpq does.
    assert!(session(&url("sslmode=require")).await.expect("require").0);
    let err = session(&url(&format!("sslmode=require&sslrootcert={other}")))
        .await
        .expect_err("require with the wrong CA");
    assert!(err.contains("certificate verify failed"), "{err}");

    // Another CA: refused, naming the server and the cause.
    for mode in ["verify-ca", "verify-full"] {
        let err = session(&url(&format!("sslmode={mode}&sslrootcert={other}")))
            .await
            .expect_err("the wrong CA");
        assert!(
            err.contains("127.0.0.1:5432") && err.contains("certificate verify failed"),
            "{mode}: {err}"
        );
    }

    // A name the certificate does not carry (connecting to 127.0.0.1 by
    // address): verify-ca accepts it, verify-full does not.
    let renamed = |mode: &str| {
        url(&format!(
            "sslmode={mode}&sslrootcert={root}&hostaddr=127.0.0.1"
        ))
        .replacen("@127.0.0.1:", "@db.novyra.invalid:", 1)
    };
    assert!(session(&renamed("verify-ca")).await.expect("verify-ca").0);
    let err = session(&renamed("verify-full"))
        .await
        .expect_err("verify-full, wrong name");
    assert!(err.contains("certificate verify failed"), "{err}");

    // verify-* without a CA: a configuration error naming the key.
    let err = session(&url("sslmode=verify-full"))
        .await
        .expect_err("no CA");
    assert!(err.contains("sslrootcert"), "{err}");
}
