//! A transaction that never finishes is abandoned at the store's deadline,
//! against the real server (through PgBouncer under `make test`).
//!
//! Once, behind PgBouncer, an ingest worker's transaction stayed open for
//! good: the server waited for the client, the client for a reply, and the
//! worker stalled while it still looked ready (docs/reliability.md). Here
//! another session holds a lock the store's transaction needs, so the
//! transaction cannot finish; the store must give up at its deadline with
//! a retryable error, close the connection so nothing of it commits, and
//! work again once the lock is gone.

mod common;

use std::time::{Duration, Instant};

use common::cfg;
use diesel::sql_types::BigInt;
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use novyra_core::ConceptUpserted;
use novyra_store::catalog::CatalogChange;
use novyra_store::{Store, StoreConfig};

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

fn concept(id: &str) -> CatalogChange {
    CatalogChange::Concept(ConceptUpserted {
        concept_id: id.into(),
        name: id.into(),
        domain: "d".into(),
        difficulty: 0.5,
        bkt_p_init: None,
        bkt_p_transit: None,
        bkt_p_slip: None,
        bkt_p_guess: None,
        updated_at: 1_700_000_000_000,
    })
}

async fn concepts(owner: &Store) -> i64 {
    let mut c = owner.session().await.expect("owner session");
    diesel::sql_query("SELECT count(*) AS n FROM concepts")
        .get_result::<Count>(&mut c)
        .await
        .expect("count")
        .n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_past_its_deadline_is_abandoned_and_rolled_back() {
    let schema = format!("deadline{}", std::process::id());
    let owner_cfg = cfg("MIGRATION_DATABASE_URL", &schema);
    novyra_store::migrate(&owner_cfg).await.expect("migrate");
    let owner = Store::new(&owner_cfg).expect("owner store");
    let deadline = Duration::from_secs(2);
    let store = Store::new(&StoreConfig {
        transaction_timeout: deadline,
        ..cfg("DATABASE_URL", &schema)
    })
    .expect("store");

    // Another session takes the table, so the store's insert waits.
    let mut blocker = owner.session().await.expect("blocker");
    diesel::sql_query("BEGIN")
        .execute(&mut blocker)
        .await
        .expect("begin");
    diesel::sql_query("LOCK TABLE concepts IN ACCESS EXCLUSIVE MODE")
        .execute(&mut blocker)
        .await
        .expect("lock");

    let t = Instant::now();
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        store.apply_catalog(&[concept("stuck")]),
    )
    .await
    .expect("the store gave up by itself, well before 30 s");
    let took = t.elapsed();
    let err = outcome.expect_err("a transaction that cannot finish fails");
    assert!(err.is_retryable(), "retryable: {err}");
    assert!(err.to_string().contains("deadline"), "says why: {err}");
    assert!(
        took >= deadline && took < deadline + Duration::from_secs(5),
        "gave up at the deadline ({deadline:?}), after {took:?}"
    );

    // The abandoned transaction never commits, even once it could.
    diesel::sql_query("COMMIT")
        .execute(&mut blocker)
        .await
        .expect("release");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        concepts(&owner).await,
        0,
        "nothing of the abandoned transaction"
    );

    // And the store works again, on a fresh connection.
    store
        .apply_catalog(&[concept("after")])
        .await
        .expect("apply after");
    assert_eq!(concepts(&owner).await, 1);

    drop(blocker);
    novyra_store::drop_schema(&owner_cfg)
        .await
        .expect("drop schema");
}

/// Taking a connection has the same deadline: a server that accepts the
/// TCP connection and then never answers (a PgBouncer whose event loop
/// stalled, a half-open route) costs one deadline, not a worker. Readiness
/// is bounded the same way. The listener is only a socket that keeps
/// silent; the Postgres behaviour under test is the lock wait above.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_costs_one_deadline() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = silent.local_addr().expect("addr");
    let keep = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            open.push(s);
        }
    });
    let deadline = Duration::from_secs(1);
    let store = Store::new(&StoreConfig {
        url: format!("postgres://novyra_app:x@{addr}/novyra?sslmode=disable"),
        session_url: None,
        schema: Some("silent".into()),
        max_connections: 2,
        transaction_timeout: deadline,
    })
    .expect("store");
    for what in ["a read", "readiness"] {
        let t = Instant::now();
        let outcome = tokio::time::timeout(Duration::from_secs(30), async {
            match what {
                "a read" => store.outbox_len().await.map(|_| ()),
                _ => store.ping().await,
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what}: gave up by itself, well before 30 s"));
        let took = t.elapsed();
        let err = outcome.expect_err("nothing answers");
        assert!(err.is_retryable(), "{what}: retryable: {err}");
        assert!(
            err.to_string()
                .contains("taking a pooled connection ran past its deadline"),
            "{what}: says why: {err}"
        );
        assert!(
            took >= deadline && took < deadline + Duration::from_secs(3),
            "{what}: gave up at the deadline ({deadline:?}), after {took:?}"
        );
    }
    keep.abort();
}
