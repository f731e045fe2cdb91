//! The pipeline against Kafka's SASL_SSL listener (127.0.0.1:9094: TLS
//! with the local CA, SCRAM-SHA-512, ACLs from `novyra acls` applied by
//! deploy/kafka-acls.py), changing only the environment:
//!
//! - the upstream producer principal publishes attempts, the ingest
//!   principal stores them and its relay publishes mastery;
//! - the analyst principal may read (`tail`) but not write: its produce
//!   fails with an authorization error and the topic does not grow;
//! - a client that trusts another CA fails naming the server;
//! - the SASL password shows up in no log and no `--help`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{attempts_end, command, connect, count, novyra, tls_file, Env, Worker};
use novyra_core::ConceptAttempted;

const SECURE_BROKER: &str = "127.0.0.1:9094";

fn password(user: &str) -> String {
    format!("{user}-dev-password")
}

/// `novyra` as `user` over SASL_SSL, trusting `ca`.
fn as_user(env: &Env, user: &str, ca: &str) -> Command {
    let mut c = command(&env.cfg);
    c.env("KAFKA_BROKERS", SECURE_BROKER)
        .env("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
        .env("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
        .env("KAFKA_SASL_USERNAME", user)
        .env("KAFKA_SASL_PASSWORD", password(user))
        .env("KAFKA_SSL_CA_LOCATION", tls_file(ca));
    c
}

/// Applies the ACLs `novyra acls` derives for this test's prefix, and the
/// dev SCRAM users, through the admin (plaintext, super user) listener.
fn apply_acls(env: &Env) {
    let (code, acls) = novyra(&env.cfg, &["acls", "--json"]);
    assert_eq!(code, 0);
    assert!(acls.lines().count() > 10, "{acls}");
    let python = std::env::var("NOVYRA_PYTHON").expect("NOVYRA_PYTHON (make test sets it)");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/kafka-acls.py");
    let mut p = Command::new(python)
        .arg(script)
        .args(["--bootstrap", "127.0.0.1:9092", "--dev-passwords"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("kafka-acls.py");
    p.stdin
        .take()
        .expect("stdin")
        .write_all(acls.as_bytes())
        .expect("write acls");
    assert!(p.wait().expect("wait").success(), "kafka-acls.py failed");
}

fn attempts_file(env: &Env, n: usize) -> std::path::PathBuf {
    let now = chrono::Utc::now().timestamp_millis();
    let path = std::env::temp_dir().join(format!("{}-attempts.jsonl", env.name));
    let mut f = std::fs::File::create(&path).expect("attempts file");
    for i in 0..n {
        let a = ConceptAttempted {
            event_id: format!("{}-e{i}", env.name),
            user_id: format!("{}-u{}", env.name, i % 7),
            concept_id: "c-1".into(),
            occurred_at: now - 60_000 + i as i64,
            correct: i % 3 != 0,
            hints_used: 0,
            duration_ms: 10_000,
            rubric: None,
        };
        writeln!(f, "{}", serde_json::to_string(&a).expect("json")).expect("write");
    }
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pipeline_runs_over_sasl_ssl_with_least_privilege() {
    let env = Env::new("secure").await;
    apply_acls(&env);
    let n = 60;
    let file = attempts_file(&env, n);

    // The upstream producer publishes; nothing but the environment changed.
    let out = as_user(&env, "novyra-producer", "ca.crt")
        .args(["produce", "--topic", "attempts"])
        .arg(&file)
        .env("RUST_LOG", "warn")
        .output()
        .expect("produce");
    assert!(
        out.status.success(),
        "producer over SASL_SSL: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(attempts_end(&env.cfg), n as i64);

    // The ingest principal stores them; its relay publishes mastery.
    // librdkafka's own debug output, configuration dump included, goes to
    // the log too: the password must not be in it.
    let log = std::env::temp_dir().join(format!("{}-ingest.log", env.name));
    let conf = std::env::temp_dir().join(format!("{}-debug.toml", env.name));
    std::fs::write(
        &conf,
        "[kafka.properties]\ndebug = \"security,broker,conf\"\n",
    )
    .expect("config");
    let ingest = Worker::new(
        as_user(&env, "novyra-ingest", "ca.crt")
            .arg("ingest")
            .env("NOVYRA_CONFIG", &conf)
            .env("NOVYRA_METRICS_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("ingest"),
    );
    let mut c = connect(&env.cfg).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let (mut rows, mut outbox) = (0, -1);
    while Instant::now() < deadline && (rows < n as i64 || outbox != 0) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        rows = count(&mut c, "SELECT count(*)::bigint AS n FROM concept_attempts").await;
        outbox = count(&mut c, "SELECT count(*)::bigint AS n FROM mastery_outbox").await;
    }
    ingest.terminate();
    let logged = std::fs::read_to_string(&log).expect("ingest log");
    assert_eq!(rows, n as i64, "stored over SASL_SSL; log:\n{logged}");
    assert_eq!(outbox, 0, "the relay published mastery as novyra-ingest");
    let mastery = common::mastery_topic(&env.cfg).await;
    assert_eq!(mastery.len(), 7, "one mastery record per user");

    // The analyst reads...
    let (code, _) = {
        let out = as_user(&env, "novyra-analyst", "ca.crt")
            .args(["tail", "attempts", "--last", "1"])
            .env("RUST_LOG", "warn")
            .output()
            .expect("tail");
        (out.status.code(), out.stdout)
    };
    assert_eq!(code, Some(0), "the analyst may read");
    // ...but may not write, and nothing is written.
    let out = as_user(&env, "novyra-analyst", "ca.crt")
        .args(["produce", "--topic", "attempts"])
        .arg(&file)
        .env("RUST_LOG", "warn")
        .output()
        .expect("produce as analyst");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.to_lowercase().contains("authorization"),
        "a clear authorization error: {err}"
    );
    assert_eq!(
        attempts_end(&env.cfg),
        n as i64,
        "the analyst wrote nothing"
    );

    // Trusting another CA fails, naming the server.
    let out = as_user(&env, "novyra-analyst", "other-ca.crt")
        .args(["lag"])
        // The error itself must say it, not only a log line.
        .env("RUST_LOG", "off")
        .output()
        .expect("lag with the wrong CA");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(SECURE_BROKER) && err.contains("certificate verify failed"),
        "the error names the server and the cause: {err}"
    );

    // The password is in no log, not even at debug level, and no --help.
    assert!(logged.contains("sasl_ssl://"), "debug logs were written");
    assert!(!logged.contains(&password("novyra-ingest")));
    for args in [
        &["--help"][..],
        &["ingest", "--help"],
        &["produce", "--help"],
    ] {
        let out = as_user(&env, "novyra-ingest", "ca.crt")
            .args(args)
            .output()
            .expect("help");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains(&password("novyra-ingest")), "{args:?}");
    }
}
