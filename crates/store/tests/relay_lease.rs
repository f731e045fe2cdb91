//! The relay lease on the real PostgreSQL: one relay per schema, and
//! pipelines in different schemas of one database never wait for each
//! other (found when a test's leftover process, in another schema, held the
//! only lease of the whole database and this test's outbox never drained).

mod common;

use common::cfg;

use novyra_store::Store;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_relay_per_schema_and_schemas_do_not_share_it() {
    let (a, b) = (
        format!("lease_a{}", std::process::id()),
        format!("lease_b{}", std::process::id()),
    );
    for s in [&a, &b] {
        novyra_store::migrate(&cfg("MIGRATION_DATABASE_URL", s))
            .await
            .expect("migrate");
    }
    let store_a = Store::new(&cfg("DATABASE_URL", &a)).expect("store a");
    let store_b = Store::new(&cfg("DATABASE_URL", &b)).expect("store b");

    let first = store_a.relay_lease().await.expect("lease a");
    assert!(
        first.is_some(),
        "the first relay of schema a gets the lease"
    );
    assert!(
        store_a
            .relay_lease()
            .await
            .expect("lease a again")
            .is_none(),
        "a second relay of schema a does not"
    );
    let other = store_b.relay_lease().await.expect("lease b");
    assert!(
        other.is_some(),
        "schema b's relay is not blocked by schema a's"
    );

    drop(first);
    // The lock goes with the lease's session; the server notices the
    // closed connection asynchronously.
    let mut again = None;
    for _ in 0..50 {
        again = store_a.relay_lease().await.expect("lease a after drop");
        if again.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(again.is_some(), "a dropped lease can be taken again");
}
