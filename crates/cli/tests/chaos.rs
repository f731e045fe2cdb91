//! `make chaos` in short: three minutes of the seeded nemesis against the
//! real local stack (tests/chaos/chaos.py), which must end with zero
//! violations. The checker is written independently of the pipeline's code
//! (Python, from DESIGN.md). `CHAOS_SEED` reproduces a run's schedule.
//!
//! NB: this test stops and restarts services of the shared local stack, so
//! it lives in its own test binary (cargo runs test binaries one at a time).

use std::process::Command;

#[test]
fn three_minutes_of_faults_end_with_zero_violations() {
    let python = std::env::var("NOVYRA_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/chaos/chaos.py");
    let minutes = std::env::var("CHAOS_TEST_MINUTES").unwrap_or_else(|_| "3".into());
    let status = Command::new(&python)
        .args([script, "--minutes", &minutes])
        .env("NOVYRA_BIN", env!("CARGO_BIN_EXE_novyra"))
        .status()
        .expect("run tests/chaos/chaos.py");
    assert!(
        status.success(),
        "the chaos run found violations (its output above names them and the seed)"
    );
}
