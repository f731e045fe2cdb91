//! The offset fence on the real PostgreSQL: a batch moves every partition
//! it read from the offset it started at, or moves none of them. This is
//! what makes a zombie consumer (one that lost its partitions in a
//! rebalance but still writes) harmless, and it is checked here at the
//! store, with stale starts on some partitions of a batch and not others.

mod common;

use std::collections::HashMap;

use common::cfg;
use novyra_store::attempts::{AttemptBatch, OffsetAdvance};
use novyra_store::{Store, StoreError};

const GROUP: &str = "fence-test";
const TOPIC: &str = "fence-test.attempts";

fn batch(advances: &[(i32, Option<i64>, i64)]) -> AttemptBatch {
    AttemptBatch {
        group: GROUP.into(),
        topic: TOPIC.into(),
        records: Vec::new(),
        advances: advances
            .iter()
            .map(|&(partition, start, next)| OffsetAdvance {
                partition,
                start,
                next,
            })
            .collect(),
        traceparent: None,
    }
}

async fn stored(store: &Store) -> HashMap<i32, i64> {
    store.stored_offsets(GROUP, TOPIC).await.expect("offsets")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_moves_all_its_partitions_or_none() {
    let schema = common::migrated("fence").await;
    let store = Store::new(&cfg("DATABASE_URL", &schema)).expect("store");

    // First sight of three partitions: rows are created.
    store
        .commit_attempts(&batch(&[(2, None, 30), (0, None, 10), (1, None, 20)]))
        .await
        .expect("first batch");
    assert_eq!(
        stored(&store).await,
        HashMap::from([(0, 10), (1, 20), (2, 30)])
    );

    // Every start matches: all three move in one go, whatever their order.
    store
        .commit_attempts(&batch(&[
            (1, Some(20), 25),
            (2, Some(30), 35),
            (0, Some(10), 15),
        ]))
        .await
        .expect("second batch");
    let moved = HashMap::from([(0, 15), (1, 25), (2, 35)]);
    assert_eq!(stored(&store).await, moved);

    // A zombie whose view of partition 1 is stale: fenced on exactly that
    // partition, and partitions 0 and 2, whose starts did match, stay put.
    let err = store
        .commit_attempts(&batch(&[
            (0, Some(15), 40),
            (1, Some(20), 45),
            (2, Some(35), 50),
        ]))
        .await
        .expect_err("a stale start must be fenced");
    match err {
        StoreError::Fenced {
            partition,
            expected,
            ..
        } => assert_eq!((partition, expected), (1, Some(20))),
        other => panic!("expected a fence, got {other}"),
    }
    assert_eq!(stored(&store).await, moved, "a fenced batch moves nothing");

    // A partition the batch believes new, which another consumer already
    // stored: fenced too, and the known partition beside it stays put.
    let err = store
        .commit_attempts(&batch(&[(0, Some(15), 60), (2, None, 70)]))
        .await
        .expect_err("a row that exists is not new");
    assert!(
        matches!(
            err,
            StoreError::Fenced {
                partition: 2,
                expected: None,
                ..
            }
        ),
        "fenced on partition 2, got {err}"
    );
    assert_eq!(stored(&store).await, moved, "a fenced batch moves nothing");

    // Known and new partitions together, both right: all move.
    store
        .commit_attempts(&batch(&[(0, Some(15), 16), (3, None, 5)]))
        .await
        .expect("mixed batch");
    assert_eq!(
        stored(&store).await,
        HashMap::from([(0, 16), (1, 25), (2, 35), (3, 5)])
    );

    novyra_store::drop_schema(&cfg("MIGRATION_DATABASE_URL", &schema))
        .await
        .expect("drop schema");
}

/// The race the fence exists for: another consumer holds a partition's row
/// (its transaction is open) while our batch arrives. Our batch must wait
/// for it, see the row it committed, and be fenced, moving none of its
/// partitions, rather than overwrite the other consumer's offset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_waits_for_a_rival_sees_its_commit_and_is_fenced() {
    use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
    let schema = common::migrated("fencerace").await;
    let store = Store::new(&cfg("DATABASE_URL", &schema)).expect("store");
    store
        .commit_attempts(&batch(&[(0, None, 10), (1, None, 20)]))
        .await
        .expect("first batch");

    // The rival: moves partition 1 from 20 to 30 and keeps its transaction open.
    let mut rival = store.session().await.expect("rival session");
    let mut watcher = store.session().await.expect("watcher session");
    rival
        .batch_execute(&format!(
            "BEGIN; UPDATE consumer_offsets SET next_offset = 30 \
             WHERE group_id = '{GROUP}' AND topic = '{TOPIC}' AND partition = 1"
        ))
        .await
        .expect("rival update");

    let ours = {
        let store = Store::new(&cfg("DATABASE_URL", &schema)).expect("store");
        tokio::spawn(async move {
            store
                .commit_attempts(&batch(&[(0, Some(10), 15), (1, Some(20), 25)]))
                .await
        })
    };
    // Wait until our batch is blocked on the rival's row lock.
    #[derive(diesel::QueryableByName)]
    struct Waiting {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let mut blocked = false;
    for _ in 0..200 {
        let w: Waiting = diesel::sql_query(
            "SELECT count(*) AS n FROM pg_stat_activity \
             WHERE wait_event_type = 'Lock' AND query LIKE '%consumer_offsets%'",
        )
        .get_result(&mut watcher)
        .await
        .expect("pg_stat_activity");
        if w.n > 0 {
            blocked = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(blocked, "our batch should wait for the rival's row lock");
    rival.batch_execute("COMMIT").await.expect("rival commit");

    let err = ours
        .await
        .expect("join")
        .expect_err("a batch that lost the race must be fenced");
    assert!(
        matches!(
            err,
            StoreError::Fenced {
                partition: 1,
                expected: Some(20),
                ..
            }
        ),
        "fenced on partition 1, got {err}"
    );
    assert_eq!(
        stored(&store).await,
        HashMap::from([(0, 10), (1, 30)]),
        "the rival's offset stands and partition 0 did not move"
    );

    novyra_store::drop_schema(&cfg("MIGRATION_DATABASE_URL", &schema))
        .await
        .expect("drop schema");
}
