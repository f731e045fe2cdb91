//! Migrations against the real PostgreSQL (`make test` starts it): they go
//! down and up again cleanly, and the runtime role cannot rewrite history.

mod common;

use common::cfg;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use novyra_store::StoreConfig;

async fn tables(c: &StoreConfig) -> Vec<String> {
    #[derive(diesel::QueryableByName)]
    struct T {
        #[diesel(sql_type = diesel::sql_types::Text)]
        name: String,
    }
    let mut conn = AsyncPgConnection::establish(&c.url).await.expect("connect");
    let rows: Vec<T> = diesel::sql_query(
        "SELECT table_name::text AS name FROM information_schema.tables WHERE table_schema = $1 \
         AND table_name <> '__diesel_schema_migrations' ORDER BY 1",
    )
    .bind::<diesel::sql_types::Text, _>(c.schema.as_deref().unwrap_or("public"))
    .load(&mut conn)
    .await
    .expect("list tables");
    rows.into_iter().map(|t| t.name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrations_go_down_and_up_again_cleanly() {
    let schema = format!("mig{}", std::process::id());
    let c = cfg("MIGRATION_DATABASE_URL", &schema);
    let applied = novyra_store::migrate(&c).await.expect("up");
    assert!(!applied.is_empty());
    let first = tables(&c).await;
    for t in [
        "concept_attempts",
        "concepts",
        "mastery_records",
        "mastery_outbox",
        "consumer_offsets",
        "rubric_evaluations",
    ] {
        assert!(first.iter().any(|x| x == t), "{t} missing from {first:?}");
    }
    // The seed's indexes, and the ones the pipeline relies on.
    #[derive(diesel::QueryableByName)]
    struct I {
        #[diesel(sql_type = diesel::sql_types::Text)]
        def: String,
    }
    let mut conn = AsyncPgConnection::establish(&c.url).await.expect("connect");
    let defs: Vec<String> = diesel::sql_query(
        "SELECT indexdef::text AS def FROM pg_indexes WHERE schemaname = $1 ORDER BY 1",
    )
    .bind::<diesel::sql_types::Text, _>(&schema)
    .load::<I>(&mut conn)
    .await
    .expect("indexes")
    .into_iter()
    .map(|i| i.def)
    .collect();
    for want in [
        "ON ONLY {s}.concept_attempts USING btree (user_id, concept_id)",
        "UNIQUE INDEX concept_attempts_pkey ON ONLY {s}.concept_attempts USING btree (event_id, occurred_at)",
        "UNIQUE INDEX mastery_records_pkey ON {s}.mastery_records USING btree (user_id, concept_id)",
        "ON {s}.rubric_evaluations USING gin (detail)",
        "UNIQUE INDEX attempt_event_ids_pkey ON {s}.attempt_event_ids USING btree (event_id)",
    ] {
        let want = want.replace("{s}", &schema);
        assert!(
            defs.iter().any(|d| d.contains(&want)),
            "missing index {want:?} in {defs:#?}"
        );
    }
    // Each attempt writes one index of the claim table, not two.
    let claim: Vec<&String> = defs
        .iter()
        .filter(|d| d.contains(&format!("ON {schema}.attempt_event_ids ")))
        .collect();
    assert_eq!(claim.len(), 1, "{claim:#?}");
    // Room for in-place (HOT) updates of the mastery rows.
    let opts: Vec<I> = diesel::sql_query(
        "SELECT array_to_string(c.reloptions, ',') AS def FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = $1 AND c.relname = 'mastery_records'",
    )
    .bind::<diesel::sql_types::Text, _>(&schema)
    .load(&mut conn)
    .await
    .expect("reloptions");
    assert_eq!(
        opts.iter().map(|o| o.def.as_str()).collect::<Vec<_>>(),
        ["fillfactor=70"]
    );
    assert_eq!(
        novyra_store::revert_all(&c).await.expect("down"),
        applied.len()
    );
    assert_eq!(
        tables(&c).await,
        Vec::<String>::new(),
        "down leaves nothing behind"
    );
    assert_eq!(
        novyra_store::migrate(&c).await.expect("up again").len(),
        applied.len()
    );
    assert_eq!(tables(&c).await, first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runtime_role_cannot_update_or_delete_attempts() {
    let schema = common::migrated("role").await;
    let app = cfg("DATABASE_URL", &schema);
    let mut conn = AsyncPgConnection::establish(&common::session_url(&app))
        .await
        .expect("connect as app");
    diesel::sql_query(format!("SET search_path TO {schema}"))
        .execute(&mut conn)
        .await
        .expect("path");
    diesel::sql_query(
        "INSERT INTO concept_attempts (event_id, user_id, concept_id, occurred_at, correct, hints_used, duration_ms, \
         mastery_before, mastery_after, mastery_delta, mastery_version, bkt_p_init, bkt_p_transit, bkt_p_slip, bkt_p_guess, \
         source_partition, source_offset, schema_id) VALUES ('e1','u','c', now(), true, 0, 1, 0.1, 0.2, 0.1, 1, 0.1, 0.1, 0.1, 0.1, 0, 0, 1)",
    )
    .execute(&mut conn)
    .await
    .expect("the app role may insert");
    for stmt in [
        "UPDATE concept_attempts SET correct = false",
        "DELETE FROM concept_attempts",
    ] {
        let err = diesel::sql_query(stmt)
            .execute(&mut conn)
            .await
            .expect_err(stmt);
        assert!(
            err.to_string().contains("permission denied"),
            "{stmt}: {err}"
        );
    }

    // The analyst reads and cannot write.
    let analyst_url = common::session_url(&app)
        .replace("novyra_app:novyra_app@", "novyra_analyst:novyra_analyst@");
    if analyst_url != common::session_url(&app) {
        let mut conn = AsyncPgConnection::establish(&analyst_url)
            .await
            .expect("connect as analyst");
        diesel::sql_query(format!("SET search_path TO {schema}"))
            .execute(&mut conn)
            .await
            .expect("path");
        diesel::sql_query("SELECT event_id FROM concept_attempts")
            .execute(&mut conn)
            .await
            .expect("the analyst may read");
        let err = diesel::sql_query("DELETE FROM mastery_records")
            .execute(&mut conn)
            .await
            .expect_err("the analyst may not write");
        assert!(err.to_string().contains("permission denied"), "{err}");
    }
}
