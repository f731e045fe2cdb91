//! The analysts' views answer with the numbers worked out by hand from a
//! small known data set; the leaderboard is refreshed (concurrently) by the
//! runtime role and read by the analyst, who can neither write nor refresh.

mod common;

use common::cfg;

use diesel::sql_types::{BigInt, Double, Nullable, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use novyra_store::Store;

async fn connect(url: &str, schema: &str) -> AsyncPgConnection {
    let mut c = AsyncPgConnection::establish(url).await.expect("connect");
    diesel::sql_query(format!("SET search_path TO {schema}"))
        .execute(&mut c)
        .await
        .expect("path");
    c
}

#[derive(diesel::QueryableByName, Debug, PartialEq)]
struct ConceptRow {
    #[diesel(sql_type = Text)]
    concept_id: String,
    #[diesel(sql_type = BigInt)]
    attempts: i64,
    #[diesel(sql_type = Nullable<Double>)]
    accuracy: Option<f64>,
    #[diesel(sql_type = BigInt)]
    learners: i64,
    #[diesel(sql_type = BigInt)]
    mastered: i64,
    #[diesel(sql_type = Nullable<Double>)]
    mastered_share: Option<f64>,
    #[diesel(sql_type = Nullable<Double>)]
    median_mastery: Option<f64>,
}

#[derive(diesel::QueryableByName, Debug, PartialEq)]
struct UserRow {
    #[diesel(sql_type = Text)]
    user_id: String,
    #[diesel(sql_type = BigInt)]
    attempts: i64,
    #[diesel(sql_type = BigInt)]
    concepts_attempted: i64,
    #[diesel(sql_type = BigInt)]
    concepts_mastered: i64,
}

#[derive(diesel::QueryableByName, Debug, PartialEq)]
struct Rank {
    #[diesel(sql_type = BigInt)]
    rank: i64,
    #[diesel(sql_type = Text)]
    user_id: String,
}

fn close(a: Option<f64>, b: f64) -> bool {
    a.is_some_and(|a| (a - b).abs() < 1e-9)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_and_leaderboard_answer_as_worked_out_by_hand() {
    let schema = format!("views{}", std::process::id());
    let owner = cfg("MIGRATION_DATABASE_URL", &schema);
    novyra_store::migrate(&owner).await.expect("up");
    let mut c = connect(&owner.url, &schema).await;
    diesel::sql_query(
        "INSERT INTO concepts (id, name, domain, difficulty, bkt_p_init, bkt_p_transit, bkt_p_slip, bkt_p_guess, source_updated_at) \
         VALUES ('c1','One','d',0.3,0.1,0.1,0.1,0.1,now()), ('c2','Two','d',0.6,0.1,0.1,0.1,0.1,now())",
    )
    .execute(&mut c)
    .await
    .expect("concepts");
    // u1: c1 right, right, right, wrong; u2: c1 right, c2 wrong twice.
    let attempts = [
        ("u1", "c1", true),
        ("u1", "c1", true),
        ("u1", "c1", true),
        ("u1", "c1", false),
        ("u2", "c1", true),
        ("u2", "c2", false),
        ("u2", "c2", false),
    ];
    for (i, (u, k, ok)) in attempts.iter().enumerate() {
        diesel::sql_query(format!(
            "INSERT INTO concept_attempts (event_id, user_id, concept_id, occurred_at, correct, hints_used, duration_ms, \
             mastery_before, mastery_after, mastery_delta, mastery_version, bkt_p_init, bkt_p_transit, bkt_p_slip, bkt_p_guess, \
             source_partition, source_offset, schema_id) VALUES ('e{i}','{u}','{k}', now(), {ok}, 0, 1000, 0.1, 0.2, 0.1, 1, 0.1, 0.1, 0.1, 0.1, 0, {i}, 1)"
        ))
        .execute(&mut c)
        .await
        .expect("attempt");
    }
    // Mastery: u1/c1 mastered; u2 low on both; u3 (no attempts kept) mastered c2.
    diesel::sql_query(
        "INSERT INTO mastery_records (user_id, concept_id, mastery, attempts_total, attempts_correct, confidence_weight, version, last_event_id, updated_at) VALUES \
         ('u1','c1',0.97,4,3,4,4,'e3',now()), ('u2','c1',0.40,1,1,1,1,'e4',now()), \
         ('u2','c2',0.10,2,0,2,2,'e6',now()), ('u3','c2',0.96,5,5,5,5,'x',now())",
    )
    .execute(&mut c)
    .await
    .expect("mastery");

    // The runtime role refreshes the leaderboard.
    let app = cfg("DATABASE_URL", &schema);
    Store::new(&app)
        .expect("store")
        .refresh_leaderboard()
        .await
        .expect("the app role refreshes");

    let analyst_url = common::session_url(&app)
        .replace("novyra_app:novyra_app@", "novyra_analyst:novyra_analyst@");
    assert_ne!(
        analyst_url,
        common::session_url(&app),
        "the dev stack's analyst login"
    );
    let mut a = connect(&analyst_url, &schema).await;
    let concepts: Vec<ConceptRow> = diesel::sql_query(
        "SELECT concept_id, attempts, accuracy, learners, mastered, mastered_share, median_mastery \
         FROM concept_stats ORDER BY concept_id",
    )
    .load(&mut a)
    .await
    .expect("concept_stats");
    assert_eq!(concepts.len(), 2);
    let c1 = &concepts[0];
    assert_eq!((c1.attempts, c1.learners, c1.mastered), (5, 2, 1));
    assert!(
        close(c1.accuracy, 0.8) && close(c1.mastered_share, 0.5),
        "{c1:?}"
    );
    assert!(close(c1.median_mastery, (0.97 + 0.40) / 2.0), "{c1:?}");
    let c2 = &concepts[1];
    assert_eq!((c2.attempts, c2.learners, c2.mastered), (2, 1, 1));
    assert!(
        close(c2.accuracy, 0.0) && close(c2.mastered_share, 0.5),
        "{c2:?}"
    );

    let users: Vec<UserRow> = diesel::sql_query(
        "SELECT user_id, attempts, concepts_attempted, concepts_mastered FROM user_progress ORDER BY user_id",
    )
    .load(&mut a)
    .await
    .expect("user_progress");
    let got: Vec<(&str, i64, i64, i64)> = users
        .iter()
        .map(|u| {
            (
                u.user_id.as_str(),
                u.attempts,
                u.concepts_attempted,
                u.concepts_mastered,
            )
        })
        .collect();
    assert_eq!(got, [("u1", 4, 1, 1), ("u2", 3, 2, 0), ("u3", 0, 1, 1)]);

    let ranks: Vec<Rank> =
        diesel::sql_query("SELECT rank, user_id FROM leaderboard ORDER BY rank, user_id")
            .load(&mut a)
            .await
            .expect("leaderboard");
    let got: Vec<(i64, &str)> = ranks.iter().map(|r| (r.rank, r.user_id.as_str())).collect();
    assert_eq!(got, [(1, "u1"), (2, "u3"), (3, "u2")]);

    // The analyst reads only.
    for stmt in [
        "SELECT novyra_refresh_leaderboard()",
        "REFRESH MATERIALIZED VIEW leaderboard",
        "INSERT INTO concepts (id, name, domain, difficulty) VALUES ('x','x','x',0.1)",
    ] {
        let err = diesel::sql_query(stmt)
            .execute(&mut a)
            .await
            .expect_err(stmt);
        let msg = err.to_string();
        assert!(
            msg.contains("permission denied") || msg.contains("must be owner"),
            "{stmt}: {msg}"
        );
    }
    novyra_store::revert_all(&owner).await.expect("down");
}
