//! Month partitions on the real PostgreSQL: created ahead, rows outside
//! every partition kept (and reported) in DEFAULT, old months detached.

mod common;

use common::cfg;

use chrono::NaiveDate;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use novyra_store::{MonthLog, Store};

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_are_created_ahead_default_keeps_strays_and_old_months_detach() {
    let schema = format!("part{}", std::process::id());
    let owner_cfg = cfg("MIGRATION_DATABASE_URL", &schema);
    novyra_store::migrate(&owner_cfg).await.expect("migrate");
    let app = Store::new(&cfg("DATABASE_URL", &schema)).expect("app store");

    assert_eq!(
        app.ensure_months_ahead(date(2031, 11, 20), 3)
            .await
            .expect("ahead"),
        Vec::<(MonthLog, NaiveDate)>::new()
    );
    let evals: Vec<String> = app
        .month_partitions(MonthLog::Evaluations)
        .await
        .expect("list")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        evals,
        [
            "evaluation_logs_2031_11",
            "evaluation_logs_2031_12",
            "evaluation_logs_2032_01",
            "evaluation_logs_2032_02",
            "evaluation_logs_default"
        ]
    );
    let names: Vec<String> = app
        .attempt_partitions()
        .await
        .expect("list")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        names,
        [
            "concept_attempts_2031_11",
            "concept_attempts_2031_12",
            "concept_attempts_2032_01",
            "concept_attempts_2032_02",
            "concept_attempts_default"
        ]
    );

    // A row for a month without a partition lands in DEFAULT, and that month
    // then cannot get a partition: it is reported, and the row stays.
    let mut c = AsyncPgConnection::establish(&common::session_url(&cfg("DATABASE_URL", &schema)))
        .await
        .expect("connect");
    diesel::sql_query(format!("SET search_path TO {schema}"))
        .execute(&mut c)
        .await
        .expect("path");
    diesel::sql_query(
        "INSERT INTO concept_attempts (event_id, user_id, concept_id, occurred_at, correct, hints_used, duration_ms, \
         mastery_before, mastery_after, mastery_delta, mastery_version, bkt_p_init, bkt_p_transit, bkt_p_slip, bkt_p_guess, \
         source_partition, source_offset, schema_id) VALUES ('stray','u','c', '2030-05-10T00:00:00Z', true, 0, 1, 0.1, 0.2, 0.1, 1, 0.1, 0.1, 0.1, 0.1, 0, 0, 1)",
    )
    .execute(&mut c)
    .await
    .expect("insert");
    assert_eq!(
        app.ensure_month_partitions(MonthLog::Attempts, &[date(2030, 5, 1)])
            .await
            .expect("ensure"),
        vec![date(2030, 5, 1)]
    );
    let parts = app.attempt_partitions().await.expect("list");
    assert!(
        parts.contains(&("concept_attempts_default".to_owned(), 1)),
        "{parts:?}"
    );

    // Dedup ids of a detached month are pruned with it; later ones stay,
    // and so does the id of an old month's attempt kept in DEFAULT (its
    // row stays, so a redelivery must still be recognised).
    diesel::sql_query(
        "INSERT INTO concept_attempts (event_id, user_id, concept_id, occurred_at, correct, hints_used, duration_ms, \
         mastery_before, mastery_after, mastery_delta, mastery_version, bkt_p_init, bkt_p_transit, bkt_p_slip, bkt_p_guess, \
         source_partition, source_offset, schema_id) VALUES \
         ('old','u','c', '2031-12-31T23:00:00Z', true, 0, 1, 0.1, 0.2, 0.1, 1, 0.1, 0.1, 0.1, 0.1, 0, 1, 1), \
         ('kept','u','c', '2032-01-01T00:00:00Z', true, 0, 1, 0.1, 0.2, 0.1, 1, 0.1, 0.1, 0.1, 0.1, 0, 2, 1)",
    )
    .execute(&mut c)
    .await
    .expect("attempts");
    diesel::sql_query(
        "INSERT INTO attempt_event_ids (event_id, occurred_at) VALUES \
         ('old', '2031-12-31T23:00:00Z'), ('kept', '2032-01-01T00:00:00Z'), \
         ('stray', '2030-05-10T00:00:00Z')",
    )
    .execute(&mut c)
    .await
    .expect("ids");

    let owner = Store::new(&owner_cfg).expect("owner store");
    let detached = owner
        .detach_partitions_before(date(2032, 1, 1))
        .await
        .expect("detach");
    assert_eq!(
        detached,
        [
            "concept_attempts_2031_11",
            "concept_attempts_2031_12",
            "evaluation_logs_2031_11",
            "evaluation_logs_2031_12"
        ]
    );
    let left: Vec<String> = app
        .attempt_partitions()
        .await
        .expect("list")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(
        left,
        [
            "concept_attempts_2032_01",
            "concept_attempts_2032_02",
            "concept_attempts_default"
        ]
    );
    #[derive(diesel::QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::Text)]
        event_id: String,
    }
    let ids: Vec<Id> = diesel::sql_query("SELECT event_id FROM attempt_event_ids ORDER BY 1")
        .load(&mut c)
        .await
        .expect("ids");
    let ids: Vec<&str> = ids.iter().map(|i| i.event_id.as_str()).collect();
    assert_eq!(ids, ["kept", "stray"]);

    // The partition function makes partitions of the logs only, and only
    // the runtime role may call it (functions are PUBLIC unless revoked).
    let other =
        diesel::sql_query("SELECT novyra_ensure_month_partition('mastery_records', '2033-01-01')")
            .execute(&mut c)
            .await
            .expect_err("not a log");
    assert!(
        other.to_string().contains("not a month-partitioned log"),
        "{other}"
    );
    let analyst_url = common::session_url(&cfg("DATABASE_URL", &schema))
        .replace("novyra_app:novyra_app@", "novyra_analyst:novyra_analyst@");
    let mut a = AsyncPgConnection::establish(&analyst_url)
        .await
        .expect("analyst connects");
    for f in [
        "novyra_ensure_month_partition('concept_attempts', '2033-01-01')",
        "novyra_ensure_attempt_partition('2033-01-01')",
    ] {
        let denied = diesel::sql_query(format!("SELECT {schema}.{f}"))
            .execute(&mut a)
            .await
            .expect_err("the analyst may not create partitions");
        assert!(
            denied.to_string().contains("permission denied"),
            "{f}: {denied}"
        );
    }
}

/// Regression (found by `make chaos`): ingest processes starting together
/// all create the same month partitions; each must succeed, and the month
/// exists once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_workers_create_the_same_month_without_failing() {
    let schema = common::migrated("partrace").await;
    for round in 0..5 {
        let from = date(2040 + round, 1, 1);
        let calls = (0..8).map(|_| {
            let app = Store::new(&cfg("DATABASE_URL", &schema)).expect("app store");
            tokio::spawn(async move { app.ensure_months_ahead(from, 2).await })
        });
        for r in futures::future::join_all(calls).await {
            assert_eq!(
                r.expect("task").expect("every caller succeeds"),
                Vec::<(MonthLog, NaiveDate)>::new()
            );
        }
    }
    let app = Store::new(&cfg("DATABASE_URL", &schema)).expect("app store");
    let names: Vec<String> = app
        .attempt_partitions()
        .await
        .expect("list")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names.len(), 5 * 3 + 1, "{names:?}");
}
