//! `novyra demo` (what `make demo` runs) end to end, in its own corner of
//! the stack: every check of its summary passes, and its timings say what
//! they claim: start-up apart from the pipeline rate, which follows the
//! offered rate, and a graph freshness measured on every edge it wrote.

mod common;

use common::*;

/// The number after `label` on the summary line that starts with it.
fn figure(out: &str, label: &str, after: &str) -> f64 {
    let line = out
        .lines()
        .find(|l| l.trim_start().starts_with(label))
        .unwrap_or_else(|| panic!("no {label:?} line in:\n{out}"));
    let rest = &line[line
        .find(after)
        .unwrap_or_else(|| panic!("{after:?} in {line:?}"))
        + after.len()..];
    rest.split_whitespace()
        .next()
        .and_then(|w| w.trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("a number after {after:?} in {line:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_reports_start_up_rate_and_freshness_apart() {
    let env = Env::new("demo").await;
    let prefix = format!("{}-", env.name);
    let out = command(&env.cfg)
        .args([
            "demo",
            "--concepts",
            "10",
            "--domains",
            "2",
            "--students",
            "40",
            "--attempts",
            "3000",
            "--rate",
            "1500",
            "--id-prefix",
            &prefix,
        ])
        .env("NOVYRA_METRICS_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stderr(std::process::Stdio::inherit())
        .output()
        .expect("run novyra demo");
    let code = out.status.code();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(code, Some(0), "novyra demo failed:\n{out}");
    assert!(!out.contains("[FAIL]"), "{out}");
    assert!(
        out.contains("[ok] attempts produced = rows in concept_attempts (this run)"),
        "{out}"
    );
    assert!(
        out.contains("[ok] one MASTERED_BY edge per mastery row"),
        "{out}"
    );

    let startup = figure(&out, "start-up", "start-up");
    let total = figure(&out, "total elapsed", "total elapsed");
    let rate = figure(&out, "pipeline rate", "pipeline rate");
    let p50 = figure(&out, "graph freshness", "p50");
    let p99 = figure(&out, "graph freshness", "p99");
    // 3,000 attempts at 1,500/s take 2 s to publish: the rest of the run is
    // start-up and the drain, which the rate must leave out.
    assert!(startup > 0.0 && startup < total, "{out}");
    assert!(total > 2.0, "{out}");
    // It cannot outrun the offer, and it leaves out the idle tail (the
    // run notices idleness after two 1.5 s checks), so it beats the rate
    // over everything after start-up by a clear margin even on a busy
    // machine.
    let after_startup = 3_000.0 / (total - startup);
    assert!(
        rate <= 1_500.0 * 1.5 && rate > 1.2 * after_startup,
        "the pipeline rate {rate} follows the offered 1,500/s, not the {after_startup:.0}/s over the run after start-up\n{out}"
    );
    assert!(p50 > 0.0 && p50 <= p99, "{out}");
    assert!(p99 < 30_000.0, "freshness p99 {p99} ms:\n{out}");
}
