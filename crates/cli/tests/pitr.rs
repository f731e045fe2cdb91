//! Point-in-time recovery (deploy/backup/pitr.sh, pgBackRest with WAL
//! archiving): the cluster restored to a moment in the middle of a run holds
//! exactly what was committed by then, and the pipeline pointed at it
//! resumes from the offsets stored in it and ends equal to the primary,
//! which read everything once. Kafka keeps the attempts, so nothing
//! committed after the restore point is lost (RPO 0).
//!
//! Needs the stack with FULL=1 (archiving on); make test starts it so.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use diesel::sql_types::Text;
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use novyra_pipeline::loadgen::{self, LoadgenOptions};

/// Beside the primary (5432) and the replica (5433).
const RESTORE_PORT: u16 = 5434;

fn pitr(args: &[&str]) -> f64 {
    let started = Instant::now();
    let out = Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/backup/pitr.sh"
        ))
        .args(args)
        .output()
        .expect("deploy/backup/pitr.sh");
    let secs = started.elapsed().as_secs_f64();
    print!("{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        out.status.success(),
        "pitr.sh {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    secs
}

#[derive(QueryableByName)]
struct Now {
    #[diesel(sql_type = Text)]
    t: String,
}

/// Stops the restored server and removes its directory, however the test ends.
struct Restored(PathBuf);

impl Drop for Restored {
    fn drop(&mut self) {
        let dir = self.0.to_string_lossy().into_owned();
        let _ = Command::new("bash")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../deploy/backup/pitr.sh"
            ))
            .args(["stop-restored", &dir])
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_to_mid_run_resumes_from_the_restored_offsets() {
    let env = Env::new("pitr").await;
    let o = |n: usize, seed: u64| LoadgenOptions {
        concepts: 10,
        domains: 2,
        students: 60,
        attempts: n,
        seed,
        rate: 0,
        days: 20,
        id_prefix: format!("{}-", env.name),
    };

    // A base backup before the run (incremental when one exists).
    let backup_s = pitr(&["backup"]);

    // First half, then the restore point, then the second half.
    loadgen::generate_and_publish(&env.cfg, &o(3_000, 1), true)
        .await
        .expect("publish");
    run_until_idle(&env.cfg);
    let mut c = connect(&env.cfg).await;
    let at_point = count(&mut c, "SELECT count(*) AS n FROM concept_attempts").await;
    let offsets_at_point = stored_offsets(&env.cfg).await;
    let point = diesel::sql_query("SELECT clock_timestamp()::text AS t")
        .get_result::<Now>(&mut c)
        .await
        .expect("now")
        .t;
    tokio::time::sleep(Duration::from_secs(1)).await;
    loadgen::generate_and_publish(&env.cfg, &o(3_000, 2), true)
        .await
        .expect("publish");
    run_until_idle(&env.cfg);
    let total = count(&mut c, "SELECT count(*) AS n FROM concept_attempts").await;
    let primary = mastery_table(&env.cfg).await;
    assert!(
        total > at_point && at_point >= 3_000,
        "{at_point} then {total}"
    );

    // The archive must hold the WAL past the point: switch and wait.
    pitr(&["archive"]);
    let dir = std::env::temp_dir().join(format!("{}-pitr", env.name));
    let _ = std::fs::remove_dir_all(&dir);
    let guard = Restored(dir.clone());
    let recover = Instant::now();
    let restore_s = pitr(&[
        "restore",
        &point,
        &dir.to_string_lossy(),
        &RESTORE_PORT.to_string(),
    ]);

    // The restored cluster: this test's schema as it was at the point.
    let mut rcfg = env.cfg.clone();
    // Straight to the restored server (DATABASE_URL may go through
    // PgBouncer, which knows only the primary), as the same role.
    rcfg.database.url = direct_url(&env.cfg).replacen(":5432/", &format!(":{RESTORE_PORT}/"), 1);
    assert_ne!(
        rcfg.database.url,
        direct_url(&env.cfg),
        "the primary's port"
    );
    rcfg.database.session_url = None;
    let mut r = connect(&rcfg).await;
    assert_eq!(
        count(&mut r, "SELECT count(*) AS n FROM concept_attempts").await,
        at_point,
        "the restored attempts are those committed by {point}"
    );
    assert_eq!(stored_offsets(&rcfg).await, offsets_at_point);

    // As after any restore (docs/disaster-recovery.md): the catalog's
    // offsets live in Kafka, past changes the restored tables lack, so it
    // re-reads its compacted topics; the ingest resumes from the offsets
    // in the restored tables and reads the rest of the attempts.
    let (code, out) = novyra(&rcfg, &["rewind", "--group", "catalog"]);
    assert_eq!(code, 0, "rewind: {out}");
    run_until_idle(&rcfg);
    let rto = recover.elapsed().as_secs_f64();
    assert_eq!(
        count(&mut r, "SELECT count(*) AS n FROM concept_attempts").await,
        total,
        "every attempt once"
    );
    assert_eq!(stored_offsets(&rcfg).await, attempts_end(&env.cfg));
    assert_same_mastery(
        "restored and caught up vs the primary",
        &primary,
        &mastery_table(&rcfg).await,
    );
    println!(
        "PITR: backup {backup_s:.1} s; restore to {point} + recovery + promote {restore_s:.1} s; \
         RTO (restore + catch-up of {} attempts) {rto:.1} s; attempts lost 0",
        total - at_point
    );
    drop(guard);
}
