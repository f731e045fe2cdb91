//! Shared harness for the tests that run `novyra` as real processes against
//! the local stack: per-test topic prefix and schema, worker processes that
//! can be killed, and checks on what Postgres and the mastery topic hold.

#![allow(dead_code, missing_docs)]

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Double, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use novyra_core::MasteryUpdated;
use novyra_core::Topic;
use novyra_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use novyra_kafka::rdkafka::message::Message;
use novyra_kafka::rdkafka::{Offset, TopicPartitionList};
use novyra_pipeline::Config;
use novyra_registry::{Codec, EventKind};

/// A test's own corner of the stack.
pub struct Env {
    pub cfg: Config,
    pub name: String,
}

impl Env {
    pub async fn new(tag: &str) -> Self {
        let cfg = novyra_testkit::config(tag);
        let name = cfg.database.schema.clone().expect("a schema of its own");
        novyra_testkit::setup(&cfg).await;
        Self { cfg, name }
    }

    /// The same topics, read into another schema by other groups: a replay.
    pub async fn replay_target(&self, suffix: &str) -> Config {
        let mut cfg = self.cfg.clone();
        let schema = format!("{}{suffix}", self.name);
        cfg.database.schema = Some(schema.clone());
        cfg.group_prefix = Some(schema);
        novyra_store::migrate(&cfg.migrate_store())
            .await
            .expect("migrate replay schema");
        cfg
    }
}

/// Starts `novyra ingest` for `cfg`, with extra TOML (e.g. Kafka properties).
pub fn spawn_ingest(cfg: &Config, toml: &str, log_name: &str) -> Worker {
    spawn_ingest_at(cfg, toml, log_name, "127.0.0.1:0")
}

/// As [`spawn_ingest`], serving `/metrics` and `/readyz` on `metrics`.
pub fn spawn_ingest_at(cfg: &Config, toml: &str, log_name: &str, metrics: &str) -> Worker {
    spawn_worker("ingest", cfg, toml, log_name, metrics)
}

/// Starts `novyra <worker>` (ingest, catalog, graph) for `cfg`.
pub fn spawn_worker(
    worker: &str,
    cfg: &Config,
    toml: &str,
    log_name: &str,
    metrics: &str,
) -> Worker {
    let dir = std::env::temp_dir();
    let conf = dir.join(format!("{log_name}.toml"));
    std::fs::write(&conf, toml).expect("write config");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(format!("{log_name}.log")))
        .expect("log file");
    command(cfg)
        .arg(worker)
        .arg("--config")
        .arg(&conf)
        .env("NOVYRA_METRICS_ADDR", metrics)
        .env("RUST_LOG", "info,rdkafka=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map(Worker::new)
        .expect("start novyra")
}

/// `novyra` pointed at `cfg`'s database, brokers, topics, schema and groups.
pub fn command(cfg: &Config) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_novyra"));
    c.env("DATABASE_URL", &cfg.database.url)
        .env(
            "DATABASE_SESSION_URL",
            cfg.database.session_url.as_deref().unwrap_or(""),
        )
        .env("KAFKA_BROKERS", &cfg.kafka.brokers)
        .env("NOVYRA_TOPIC_PREFIX", &cfg.topic_prefix)
        .env(
            "NOVYRA_DB_SCHEMA",
            cfg.database.schema.as_deref().unwrap_or(""),
        )
        .env(
            "NOVYRA_GROUP_PREFIX",
            cfg.group_prefix.as_deref().unwrap_or(""),
        );
    c
}

/// `cfg`'s runtime login straight to Postgres (where migrations go) rather
/// than through PgBouncer: for tests of what the server itself sees.
pub fn direct_url(cfg: &Config) -> String {
    let login = cfg
        .database
        .url
        .split_once("//")
        .and_then(|(_, r)| r.split_once('@'))
        .expect("user@host in DATABASE_URL")
        .0;
    let server = cfg
        .database
        .migrate_url
        .as_deref()
        .unwrap_or(&cfg.database.url)
        .split_once('@')
        .expect("user@host in MIGRATION_DATABASE_URL")
        .1;
    format!("postgres://{login}@{server}")
}

/// Runs `novyra args...` for `cfg` to completion; returns the exit code
/// and stdout (stderr passes through to the test's output).
pub fn novyra(cfg: &Config, args: &[&str]) -> (i32, String) {
    let out = command(cfg)
        .args(args)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit())
        .output()
        .expect("run novyra");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// `novyra run --exit-when-idle` for `cfg`: the whole pipeline until
/// every group has caught up; asserts it exits 0.
pub fn run_until_idle(cfg: &Config) {
    let status = command(cfg)
        .args(["run", "--exit-when-idle"])
        .env("NOVYRA_METRICS_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .status()
        .expect("novyra run");
    assert!(
        status.success(),
        "novyra run --exit-when-idle exited with {status}"
    );
}

/// SIGTERM and wait (SIGKILL after 30 s).
pub fn terminate(worker: Worker) {
    worker.terminate();
}

/// SIGTERM and wait (SIGKILL after 30 s), asserting a clean exit.
fn terminate_child(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            assert!(
                status.success(),
                "novyra ingest exited with {status} on SIGTERM"
            );
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("novyra ingest did not stop within 30 s of SIGTERM");
}

/// A worker process that is killed if the test fails before it is
/// terminated, so a failed test leaves nothing running that holds locks,
/// group memberships or CPU for the tests after it.
pub struct Worker(Option<Child>);

impl Worker {
    /// Takes charge of `child`.
    pub fn new(child: Child) -> Self {
        Self(Some(child))
    }

    /// SIGTERM and wait, asserting a clean exit (see [`terminate`]).
    pub fn terminate(mut self) {
        if let Some(c) = self.0.take() {
            terminate_child(c);
        }
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(mut self) {
        if let Some(mut c) = self.0.take() {
            c.kill().expect("kill -9");
            let _ = c.wait();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// SIGKILL: no chance to clean up.
pub fn kill9(worker: Worker) {
    worker.kill9();
}

pub async fn connect(cfg: &Config) -> AsyncPgConnection {
    // A session of its own (DATABASE_SESSION_URL when set): a session SET
    // through a transaction-mode pooler would reach other clients.
    let url = cfg
        .database
        .session_url
        .as_ref()
        .unwrap_or(&cfg.database.url);
    let mut c = AsyncPgConnection::establish(url).await.expect("connect");
    let schema = cfg.database.schema.clone().expect("schema");
    diesel::sql_query(format!("SET search_path TO {schema}"))
        .execute(&mut c)
        .await
        .expect("search path");
    c
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

pub async fn count(c: &mut AsyncPgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<Count>(c)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .n
}

/// Total end offset of the attempts topic.
pub fn attempts_end(cfg: &Config) -> i64 {
    let c: BaseConsumer = cfg.kafka().reader_config().create().expect("reader");
    novyra_kafka::lag::watermarks(&c, &cfg.topic(Topic::Attempts), Duration::from_secs(10))
        .expect("watermarks")
        .iter()
        .map(|(_, _, high)| high)
        .sum()
}

/// Sum of the ingest offsets stored in Postgres.
pub async fn stored_offsets(cfg: &Config) -> i64 {
    let mut c = connect(cfg).await;
    let group = cfg.group("ingest");
    count(
        &mut c,
        &format!(
            "SELECT coalesce(sum(next_offset), 0)::bigint AS n FROM consumer_offsets WHERE group_id = '{group}'"
        ),
    )
    .await
}

/// Waits until Postgres holds offsets up to the end of the attempts topic
/// and the outbox is empty.
pub async fn wait_caught_up(cfg: &Config, timeout: Duration) {
    let end = attempts_end(cfg);
    let mut c = connect(cfg).await;
    let started = Instant::now();
    loop {
        let stored = stored_offsets(cfg).await;
        let outbox = count(&mut c, "SELECT count(*) AS n FROM mastery_outbox").await;
        if stored >= end && outbox == 0 {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "not caught up after {timeout:?}: offsets {stored} of {end}, outbox {outbox}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A mastery row with every column, floats as bits, for exact comparison.
#[derive(QueryableByName, Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Mastery {
    #[diesel(sql_type = Text)]
    pub user_id: String,
    #[diesel(sql_type = Text)]
    pub concept_id: String,
    #[diesel(sql_type = BigInt)]
    pub mastery_bits: i64,
    #[diesel(sql_type = BigInt)]
    pub attempts_total: i64,
    #[diesel(sql_type = BigInt)]
    pub attempts_correct: i64,
    #[diesel(sql_type = BigInt)]
    pub confidence_bits: i64,
    #[diesel(sql_type = BigInt)]
    pub version: i64,
    #[diesel(sql_type = Text)]
    pub last_event_id: String,
    #[diesel(sql_type = BigInt)]
    pub updated_ms: i64,
}

#[derive(QueryableByName)]
struct Raw {
    #[diesel(sql_type = Text)]
    user_id: String,
    #[diesel(sql_type = Text)]
    concept_id: String,
    #[diesel(sql_type = Double)]
    mastery: f64,
    #[diesel(sql_type = BigInt)]
    attempts_total: i64,
    #[diesel(sql_type = BigInt)]
    attempts_correct: i64,
    #[diesel(sql_type = Double)]
    confidence_weight: f64,
    #[diesel(sql_type = BigInt)]
    version: i64,
    #[diesel(sql_type = Text)]
    last_event_id: String,
    #[diesel(sql_type = BigInt)]
    updated_ms: i64,
}

fn bits(x: f64) -> i64 {
    i64::from_ne_bytes(x.to_bits().to_ne_bytes())
}

pub async fn mastery_table(cfg: &Config) -> Vec<Mastery> {
    let mut c = connect(cfg).await;
    let rows: Vec<Raw> = diesel::sql_query(
        "SELECT user_id, concept_id, mastery, attempts_total, attempts_correct, confidence_weight, \
         version, last_event_id, (extract(epoch FROM updated_at) * 1000)::bigint AS updated_ms \
         FROM mastery_records ORDER BY user_id, concept_id",
    )
    .load(&mut c)
    .await
    .expect("mastery rows");
    rows.into_iter()
        .map(|r| Mastery {
            user_id: r.user_id,
            concept_id: r.concept_id,
            mastery_bits: bits(r.mastery),
            attempts_total: r.attempts_total,
            attempts_correct: r.attempts_correct,
            confidence_bits: bits(r.confidence_weight),
            version: r.version,
            last_event_id: r.last_event_id,
            updated_ms: r.updated_ms,
        })
        .collect()
}

/// The latest value per key on the mastery topic, read from the beginning
/// up to the current end (a tombstone removes the key).
pub async fn mastery_topic(cfg: &Config) -> Vec<Mastery> {
    let topic = cfg.topic(Topic::Mastery);
    let reader: BaseConsumer = cfg.kafka().reader_config().create().expect("reader");
    let marks = novyra_kafka::lag::watermarks(&reader, &topic, Duration::from_secs(10))
        .expect("watermarks");
    let mut tpl = TopicPartitionList::new();
    let mut remaining: BTreeMap<i32, i64> = BTreeMap::new();
    for (p, low, high) in &marks {
        if high > low {
            tpl.add_partition_offset(&topic, *p, Offset::Beginning)
                .expect("partition");
            remaining.insert(*p, *high);
        }
    }
    reader.assign(&tpl).expect("assign");
    let codec = Codec::new(&cfg.registry()).expect("codec");
    let mut latest: BTreeMap<String, Option<MasteryUpdated>> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !remaining.is_empty() {
        assert!(Instant::now() < deadline, "mastery topic not read in time");
        let Some(m) = reader.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = m.expect("read mastery topic");
        let key = String::from_utf8_lossy(m.key().expect("mastery records are keyed")).into_owned();
        let value = match m.payload() {
            Some(p) => Some(
                codec
                    .decode::<MasteryUpdated>(EventKind::Mastery, p)
                    .await
                    .expect("decode mastery")
                    .value,
            ),
            None => None,
        };
        latest.insert(key, value);
        if remaining
            .get(&m.partition())
            .is_some_and(|h| m.offset() + 1 >= *h)
        {
            remaining.remove(&m.partition());
        }
    }
    let mut out: Vec<Mastery> = latest
        .into_values()
        .flatten()
        .map(|v| Mastery {
            user_id: v.user_id,
            concept_id: v.concept_id,
            mastery_bits: bits(v.mastery),
            attempts_total: v.attempts_total,
            attempts_correct: v.attempts_correct,
            confidence_bits: bits(v.confidence_weight),
            version: v.version,
            last_event_id: v.last_event_id,
            updated_ms: v.updated_at,
        })
        .collect();
    out.sort();
    out
}

/// Audit invariants: every event stored once, and per (user, concept) the
/// n stored attempts have distinct versions, none above the mastery row's,
/// which counts n attempts (a recomputation bumps the version only).
pub async fn assert_audit_consistent(cfg: &Config, distinct_events: i64) {
    let mut c = connect(cfg).await;
    assert_eq!(
        count(&mut c, "SELECT count(*) AS n FROM concept_attempts").await,
        distinct_events,
        "attempt rows equal the distinct events produced"
    );
    assert_eq!(
        count(
            &mut c,
            "SELECT count(DISTINCT event_id) AS n FROM concept_attempts"
        )
        .await,
        distinct_events,
        "no event stored twice"
    );
    let bad = count(
        &mut c,
        "SELECT count(*) AS n FROM (SELECT user_id, concept_id, count(*) AS k, \
         count(DISTINCT mastery_version) AS d, max(mastery_version) AS mx \
         FROM concept_attempts GROUP BY user_id, concept_id) a \
         LEFT JOIN mastery_records m USING (user_id, concept_id) \
         WHERE a.k <> a.d OR a.mx > m.version OR m.attempts_total IS DISTINCT FROM a.k",
    )
    .await;
    assert_eq!(
        bad, 0,
        "pairs whose versions are not distinct, or above the row's, or whose count differs"
    );
}

/// Panics with the first differences between two sorted mastery sets.
pub fn assert_same_mastery(what: &str, left: &[Mastery], right: &[Mastery]) {
    if left == right {
        return;
    }
    let l: BTreeMap<(&str, &str), &Mastery> = left
        .iter()
        .map(|m| ((m.user_id.as_str(), m.concept_id.as_str()), m))
        .collect();
    let r: BTreeMap<(&str, &str), &Mastery> = right
        .iter()
        .map(|m| ((m.user_id.as_str(), m.concept_id.as_str()), m))
        .collect();
    let only_l = l.keys().filter(|k| !r.contains_key(*k)).count();
    let only_r = r.keys().filter(|k| !l.contains_key(*k)).count();
    let differ: Vec<_> = l
        .iter()
        .filter_map(|(k, a)| r.get(k).filter(|b| *b != a).map(|b| (a, b)))
        .collect();
    panic!(
        "{what}: {} vs {} rows, {only_l} only left, {only_r} only right, {} differ; first: {:?}",
        left.len(),
        right.len(),
        differ.len(),
        <[_]>::first(&differ)
    );
}

/// A free loopback port for a child's metrics endpoint.
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    format!("127.0.0.1:{}", l.local_addr().expect("addr").port())
}

/// `GET path` on `addr`: (status code, body); `None` if nothing answers.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((code, body))
}

/// A file the stack's TLS set-up made (`deploy/tls.sh`: `ca.crt`, the
/// unrelated `other-ca.crt`, ...), under `NOVYRA_STACK_DIR` or `.stack`.
pub fn tls_file(name: &str) -> std::path::PathBuf {
    let stack = std::env::var("NOVYRA_STACK_DIR").map_or_else(
        |_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.stack"),
        std::path::PathBuf::from,
    );
    stack.join("tls").join(name)
}

/// Runs `deploy/<script> <action>` (stop or start one service of the stack).
pub fn stack(script: &str, action: &str) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/");
    let status = Command::new("bash")
        .arg(format!("{path}{script}"))
        .arg(action)
        .status()
        .expect("run deploy script");
    assert!(status.success(), "deploy/{script} {action} failed");
}

/// Waits until `group` has zero lag on every topic it consumes (Kafka's
/// committed offsets).
pub async fn wait_group_caught_up(cfg: &Config, group: &str, timeout: Duration) {
    let started = Instant::now();
    loop {
        let lags = novyra_pipeline::run::all_lag(cfg).await.expect("lag");
        let behind: i64 = lags
            .iter()
            .filter(|(g, _)| g == group)
            .flat_map(|(_, ps)| ps.iter().map(|p| p.lag()))
            .sum();
        if behind == 0 {
            return;
        }
        assert!(
            started.elapsed() < timeout,
            "{group} still {behind} behind after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Polls `/readyz` on `addr` until it answers `code` with `needle` in the body.
pub async fn wait_readyz(addr: &str, code: u16, needle: &str, timeout: Duration) -> String {
    let started = Instant::now();
    loop {
        if let Some((c, body)) = http_get(addr, "/readyz") {
            if c == code && body.contains(needle) {
                return body;
            }
        }
        assert!(
            started.elapsed() < timeout,
            "/readyz did not answer {code} with {needle:?} within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
