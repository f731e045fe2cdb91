//! Two stores in two schemas writing at once through the same connection
//! pool (`make test`'s DATABASE_URL is PgBouncer's transaction pool, where
//! consecutive transactions of one client run on different server
//! sessions): every row lands in its own store's schema, never the other's.
//! A schema set per connection instead of per transaction fails this.

mod common;

use common::cfg;
use diesel::sql_types::Text;
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use novyra_core::ConceptUpserted;
use novyra_store::catalog::CatalogChange;
use novyra_store::Store;

const ROUNDS: usize = 150;

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = Text)]
    id: String,
}

fn concept(id: String) -> CatalogChange {
    CatalogChange::Concept(ConceptUpserted {
        name: id.clone(),
        concept_id: id,
        domain: "d".into(),
        difficulty: 0.5,
        bkt_p_init: None,
        bkt_p_transit: None,
        bkt_p_slip: None,
        bkt_p_guess: None,
        updated_at: 1_700_000_000_000,
    })
}

async fn writer(store: Store, tag: &'static str) {
    for i in 0..ROUNDS {
        store
            .apply_catalog(&[concept(format!("{tag}{i}"))])
            .await
            .expect("apply");
        // Reads between the writes, so the pool's server sessions are
        // handed back and forth between the two schemas.
        store.outbox_len().await.expect("read");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_store_writes_only_into_its_own_schema() {
    let pid = std::process::id();
    let (a, b) = (format!("pin_a{pid}"), format!("pin_b{pid}"));
    for s in [&a, &b] {
        novyra_store::migrate(&cfg("MIGRATION_DATABASE_URL", s))
            .await
            .expect("migrate");
    }
    let store_a = Store::new(&cfg("DATABASE_URL", &a)).expect("store a");
    let store_b = Store::new(&cfg("DATABASE_URL", &b)).expect("store b");
    tokio::join!(
        writer(store_a.clone(), "a"),
        writer(store_b.clone(), "b"),
        writer(store_a.clone(), "x"),
        writer(store_b.clone(), "y"),
    );
    for (store, own) in [(&store_a, ['a', 'x']), (&store_b, ['b', 'y'])] {
        let mut c = store.session().await.expect("session");
        let ids: Vec<Id> = diesel::sql_query("SELECT id FROM concepts")
            .load(&mut c)
            .await
            .expect("ids");
        let strays: Vec<_> = ids
            .iter()
            .filter(|r| !r.id.starts_with(own))
            .map(|r| r.id.as_str())
            .collect();
        assert!(strays.is_empty(), "rows of the other schema: {strays:?}");
        assert_eq!(ids.len(), 2 * ROUNDS, "every write of this store");
    }
    for s in [&a, &b] {
        novyra_store::drop_schema(&cfg("MIGRATION_DATABASE_URL", s))
            .await
            .expect("drop");
    }
}
