//! The whole pipeline against the stack's secure endpoints, changing only
//! the environment:
//!
//! - Kafka's SASL_SSL listener (127.0.0.1:9192: TLS with the local CA,
//!   SCRAM-SHA-512, ACLs from `novyra acls` applied by deploy/kafka-acls.py);
//! - Postgres with `sslmode=verify-full` and the CA file;
//! - the registry over HTTPS with basic auth (deploy/registry-proxy.sh);
//! - Neo4j over `bolt+s://` with the CA file.
//!
//! The upstream producer principal publishes attempts, the ingest principal
//! stores them (every one of its Postgres sessions encrypted) and its relay
//! publishes mastery, the graph principal writes the edges. The analyst
//! principal may read (`tail`) but not write: its produce fails with an
//! authorization error and the topic does not grow. A wrong registry
//! password and a client that trusts another CA fail saying why, naming the
//! server. No password shows up in a log or a `--help`.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{attempts_end, command, connect, count, direct_url, novyra, tls_file, Env, Worker};
use novyra_core::ConceptAttempted;

const SECURE_BROKER: &str = "127.0.0.1:9192";
const SECURE_REGISTRY: &str = "https://127.0.0.1:8444/apis/ccompat/v7";
/// deploy/lib.sh's dev credentials for the registry proxy.
const REGISTRY_USER: &str = "novyra";
const REGISTRY_PASSWORD: &str = "novyra-registry-dev-password";

fn password(user: &str) -> String {
    format!("{user}-dev-password")
}

/// `novyra` as Kafka principal `user` over SASL_SSL trusting `kafka_ca`,
/// and over TLS with the stack's CA to Postgres (its sessions named
/// `<test>-<user>`), the registry and Neo4j.
fn as_user(env: &Env, user: &str, kafka_ca: &str) -> Command {
    let ca = tls_file("ca.crt");
    // Postgres itself, so that pg_stat_ssl shows this client's own TLS.
    let db = &direct_url(&env.cfg);
    let sep = if db.contains('?') { '&' } else { '?' };
    let database_url = format!(
        "{db}{sep}sslmode=verify-full&sslrootcert={}&application_name={}-{user}",
        ca.display(),
        env.name
    );
    let registry_password = std::env::temp_dir().join(format!("{}-registry-pw", env.name));
    std::fs::write(&registry_password, format!("{REGISTRY_PASSWORD}\n")).expect("password file");
    let mut c = command(&env.cfg);
    c.env("DATABASE_SESSION_URL", &database_url)
        .env("DATABASE_URL", database_url)
        .env("SCHEMA_REGISTRY_URL", SECURE_REGISTRY)
        .env("SCHEMA_REGISTRY_USER", REGISTRY_USER)
        .env("SCHEMA_REGISTRY_PASSWORD_FILE", registry_password)
        .env("SCHEMA_REGISTRY_CA_FILE", &ca)
        .env("NEO4J_URI", "bolt+s://127.0.0.1:7687")
        .env("NEO4J_CA_FILE", &ca)
        .env("KAFKA_BROKERS", SECURE_BROKER)
        .env("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
        .env("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
        .env("KAFKA_SASL_USERNAME", user)
        .env("KAFKA_SASL_PASSWORD", password(user))
        .env("KAFKA_SSL_CA_LOCATION", tls_file(kafka_ca));
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
async fn the_pipeline_runs_on_the_secure_stack_with_least_privilege() {
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

    // Confluent's Python client, as the same principal over the same
    // endpoints (tests/interop/produce_confluent.py reads the same variables).
    let py = 30;
    let python = std::env::var("NOVYRA_PYTHON").expect("NOVYRA_PYTHON (make test sets it)");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/interop/produce_confluent.py");
    let cmd = as_user(&env, "novyra-producer", "ca.crt");
    let out = Command::new(python)
        .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .env("SCHEMA_REGISTRY_PASSWORD", REGISTRY_PASSWORD)
        .arg(script)
        .args([
            &env.cfg.topic_prefix,
            &format!("{}-py-", env.name),
            &py.to_string(),
        ])
        .output()
        .expect("python producer");
    assert!(
        out.status.success(),
        "confluent-kafka over SASL_SSL and HTTPS: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let n = n + py;
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
    // What the server saw of the ingest worker's sessions: all encrypted.
    let sessions = |ssl: bool| {
        format!(
            "SELECT count(*)::bigint AS n FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name = '{}-novyra-ingest' AND s.ssl = {ssl}",
            env.name
        )
    };
    let encrypted = count(&mut c, &sessions(true)).await;
    let clear = count(&mut c, &sessions(false)).await;
    ingest.terminate();
    let logged = std::fs::read_to_string(&log).expect("ingest log");
    assert_eq!(rows, n as i64, "stored over SASL_SSL; log:\n{logged}");
    assert_eq!(outbox, 0, "the relay published mastery as novyra-ingest");
    assert!(
        encrypted >= 1 && clear == 0,
        "ingest's Postgres sessions: {encrypted} over TLS, {clear} in the clear"
    );
    let mastery = common::mastery_topic(&env.cfg).await;
    assert_eq!(
        mastery.len(),
        7 + 15,
        "ours: 7 users on one concept; Python's: 5 users x 3 concepts"
    );

    // The graph principal writes the edges over bolt+s.
    let graph = Worker::new(
        as_user(&env, "novyra-graph", "ca.crt")
            .arg("graph")
            .env("NOVYRA_METRICS_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("graph sink"),
    );
    let neo4j = env.cfg.graph().expect("graph");
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut edges = Vec::new();
    while Instant::now() < deadline && edges.len() < mastery.len() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        edges = neo4j.mastery_edges(&env.name).await.expect("edges");
    }
    assert_eq!(edges.len(), mastery.len(), "an edge per mastery record");
    graph.terminate();

    // A wrong registry password: refused with the registry's reason, and
    // nothing is published.
    let out = as_user(&env, "novyra-producer", "ca.crt")
        .args(["produce", "--topic", "attempts"])
        .arg(&file)
        .env_remove("SCHEMA_REGISTRY_PASSWORD_FILE")
        .env("SCHEMA_REGISTRY_PASSWORD", "not-the-password")
        .env("RUST_LOG", "off")
        .output()
        .expect("produce, wrong registry password");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("401"), "the registry's refusal: {err}");
    assert!(!err.contains("not-the-password"), "{err}");
    assert_eq!(attempts_end(&env.cfg), n as i64, "nothing published");

    // A registry certificate from another CA: refused, naming the server
    // and the cause.
    let out = as_user(&env, "novyra-producer", "ca.crt")
        .args(["produce", "--topic", "attempts"])
        .arg(&file)
        .env("SCHEMA_REGISTRY_CA_FILE", tls_file("other-ca.crt"))
        .env("RUST_LOG", "off")
        .output()
        .expect("produce, wrong registry CA");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("127.0.0.1:8444") && err.contains("invalid peer certificate"),
        "the error names the registry and the cause: {err}"
    );

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
    assert!(!logged.contains(REGISTRY_PASSWORD));
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
