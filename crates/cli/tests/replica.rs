//! The streaming read replica (deploy/postgres-replica.sh, 127.0.0.1:5433):
//! what the pipeline writes on the primary shows up there, the analysts'
//! leaderboard is served from it through `ANALYTICS_DATABASE_URL`, and
//! nobody writes on it — the analyst may not write on the primary either.
//! `make test` starts the replica (FULL=1).

mod common;

use std::time::{Duration, Instant};

use common::*;
use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use novyra_pipeline::loadgen::{self, LoadgenOptions};

/// `url` with another user and port: the dev stack's logins are
/// `<role>:<role>`.
fn as_role(url: &str, role: &str, port: u16) -> String {
    let rest = url.split_once('@').expect("user@host in DATABASE_URL").1;
    let (_, path) = rest.split_once('/').expect("a database in DATABASE_URL");
    format!("postgres://{role}:{role}@127.0.0.1:{port}/{path}")
}

async fn open(url: &str, schema: &str) -> AsyncPgConnection {
    let mut c = AsyncPgConnection::establish(url).await.expect("connect");
    diesel::sql_query(format!("SET search_path TO {schema}"))
        .execute(&mut c)
        .await
        .expect("search path");
    c
}

#[derive(QueryableByName, Debug, PartialEq)]
struct Ranked {
    #[diesel(sql_type = BigInt)]
    rank: i64,
    #[diesel(sql_type = Text)]
    user_id: String,
}

/// The error of a write, which must fail.
async fn refused(c: &mut AsyncPgConnection, sql: &str) -> String {
    diesel::sql_query(sql)
        .execute(c)
        .await
        .expect_err("the write must be refused")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_replica_serves_the_analysts_and_takes_no_writes() {
    let env = Env::new("replica").await;
    let options = LoadgenOptions {
        concepts: 8,
        domains: 2,
        students: 40,
        attempts: 1_500,
        seed: 5,
        rate: 0,
        days: 10,
        id_prefix: format!("{}-", env.name),
    };
    loadgen::generate_and_publish(&env.cfg, &options, true)
        .await
        .expect("publish");
    run_until_idle(&env.cfg);
    let (code, _) = novyra(&env.cfg, &["db", "refresh-leaderboard"]);
    assert_eq!(code, 0);

    let db = &env.cfg.database.url;
    let mut primary = connect(&env.cfg).await;
    let rows = count(
        &mut primary,
        "SELECT count(*)::bigint AS n FROM concept_attempts",
    )
    .await;
    assert_eq!(rows, 1_500);

    // Replicated: the same rows and the same leaderboard on the standby.
    let mut replica = open(&as_role(db, "novyra_app", 5433), &env.name).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = -1;
    while Instant::now() < deadline && seen != rows {
        // Until the migrations reach it, the schema is not there yet.
        seen = diesel::sql_query("SELECT count(*)::bigint AS n FROM concept_attempts")
            .get_result::<Count>(&mut replica)
            .await
            .map_or(-1, |c| c.n);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(seen, rows, "the replica has every attempt");
    let board = "SELECT rank, user_id FROM leaderboard ORDER BY rank, user_id";
    let on_primary: Vec<Ranked> = diesel::sql_query(board)
        .load(&mut primary)
        .await
        .expect("primary leaderboard");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut on_replica: Vec<Ranked> = Vec::new();
    while Instant::now() < deadline && on_replica != on_primary {
        on_replica = diesel::sql_query(board)
            .load(&mut replica)
            .await
            .expect("replica leaderboard");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(on_replica, on_primary);
    assert_eq!(on_primary.len(), 40, "every student ranked");

    // `novyra db leaderboard` reads the replica, as the analyst.
    let analyst_replica = as_role(db, "novyra_analyst", 5433);
    let out = command(&env.cfg)
        .args(["db", "leaderboard", "--limit", "1000", "--json"])
        .env("ANALYTICS_DATABASE_URL", &analyst_replica)
        .env("RUST_LOG", "warn")
        .output()
        .expect("novyra db leaderboard");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<(i64, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json line");
            (
                v["rank"].as_i64().expect("rank"),
                v["user_id"].as_str().expect("user").to_owned(),
            )
        })
        .collect();
    let expected: Vec<(i64, String)> = on_primary
        .iter()
        .map(|r| (r.rank, r.user_id.clone()))
        .collect();
    assert_eq!(listed, expected);
    // ...and really from there: with the replica's port closed it fails.
    let out = command(&env.cfg)
        .args(["db", "leaderboard"])
        .env(
            "ANALYTICS_DATABASE_URL",
            as_role(db, "novyra_analyst", 5439),
        )
        .env("RUST_LOG", "off")
        .output()
        .expect("novyra db leaderboard, nowhere");
    assert!(!out.status.success());

    // Nobody writes on the standby, not even the runtime role...
    // (Only a copy of an existing row: never reached, it is refused first.)
    let insert = "INSERT INTO concept_attempts SELECT * FROM concept_attempts LIMIT 1";
    let err = refused(&mut replica, insert).await;
    assert!(err.contains("read-only transaction"), "{err}");
    let mut analyst_on_replica = open(&analyst_replica, &env.name).await;
    let err = refused(
        &mut analyst_on_replica,
        "REFRESH MATERIALIZED VIEW leaderboard",
    )
    .await;
    assert!(
        err.contains("recovery") || err.contains("read-only") || err.contains("owner"),
        "{err}"
    );
    // ...and the analyst writes nowhere.
    let mut analyst = open(&as_role(db, "novyra_analyst", 5432), &env.name).await;
    let err = refused(&mut analyst, insert).await;
    assert!(err.contains("permission denied"), "{err}");
    let err = refused(&mut analyst, "SELECT novyra_refresh_leaderboard()").await;
    assert!(err.contains("permission denied"), "{err}");
    assert_eq!(
        count(
            &mut primary,
            "SELECT count(*)::bigint AS n FROM concept_attempts"
        )
        .await,
        rows,
        "nothing was written"
    );
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}
