//! Configuration: defaults, then a TOML file, then environment variables.
//! Unknown keys are refused so a typo fails at start-up, naming the key.
//! Secrets (database URLs, passwords) come from the environment or files,
//! and are never printed: `Debug` redacts them.

use std::collections::BTreeMap;
use std::path::Path;

use novyra_core::{Group, Topic};
use serde::Deserialize;

/// Why the configuration is unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("reading {path}: {source}")]
    Read {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema (names the key).
    #[error("parsing {path}: {message}")]
    Parse {
        /// Path.
        path: String,
        /// What is wrong, including the offending key.
        message: String,
    },
    /// A required value is missing or invalid.
    #[error("config key {key}: {message}")]
    Invalid {
        /// The key, as in the file or environment.
        key: &'static str,
        /// What is wrong.
        message: String,
    },
}

/// Everything a worker needs.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Prefix of every topic name (`novyra.`); env `NOVYRA_TOPIC_PREFIX`.
    pub topic_prefix: String,
    /// Prefix of consumer group ids; env `NOVYRA_GROUP_PREFIX`. Defaults to
    /// the topic prefix without its dot (`novyra` gives `novyra-ingest`).
    /// A replay into another schema needs its own groups on the same topics.
    pub group_prefix: Option<String>,
    /// Kafka settings.
    pub kafka: KafkaSection,
    /// PostgreSQL settings.
    pub database: DatabaseSection,
    /// Schema registry settings.
    pub registry: RegistrySection,
    /// Neo4j settings.
    pub neo4j: Neo4jSection,
    /// Worker tuning.
    pub pipeline: PipelineSection,
}

/// Kafka settings.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSection {
    /// Bootstrap servers; env `KAFKA_BROKERS`.
    pub brokers: String,
    /// librdkafka properties passed through verbatim (e.g. `"security.protocol" = "SASL_SSL"`).
    pub properties: BTreeMap<String, String>,
    /// Replication factor of the topics the pipeline creates. Unset, it
    /// follows the cluster: 3 copies with `min.insync.replicas=2` on three
    /// or more brokers, one per broker below that (1 on the dev stack).
    pub replication_factor: Option<i32>,
    /// Retention of the attempts topic in ms; -1 keeps everything (replay needs it).
    pub attempts_retention_ms: i64,
}

/// PostgreSQL settings.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseSection {
    /// Runtime URL (least-privilege app role); env `DATABASE_URL`.
    pub url: String,
    /// Migration URL (DDL role); env `MIGRATION_DATABASE_URL`; defaults to `url`.
    pub migrate_url: Option<String>,
    /// Read-only URL for the analysts' reads (a streaming replica); env
    /// `ANALYTICS_DATABASE_URL`; defaults to `url`. Keeps leaderboard and
    /// report queries off the primary that the ingest writes to.
    pub analytics_url: Option<String>,
    /// A URL that keeps a server session per connection, for the relay's
    /// lease (a session advisory lock); env `DATABASE_SESSION_URL`. Needed
    /// when `url` goes through a transaction-mode pooler (PgBouncer): point
    /// it at Postgres or at a session-mode pool. Defaults to `url`.
    pub session_url: Option<String>,
    /// Schema to use instead of the default; env `NOVYRA_DB_SCHEMA`.
    pub schema: Option<String>,
    /// Pool size per process.
    pub max_connections: usize,
    /// The longest one Postgres transaction may take before it is
    /// abandoned (its connection closed, so the server rolls it back) and
    /// retried; a stuck connection then costs this long, not a stalled
    /// worker. Default 60 000.
    pub transaction_timeout_ms: u64,
}

/// Registry settings.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrySection {
    /// Confluent-compatible base URL; env `SCHEMA_REGISTRY_URL`.
    pub url: String,
    /// Basic-auth user; env `SCHEMA_REGISTRY_USER`.
    pub username: Option<String>,
    /// Basic-auth password; env `SCHEMA_REGISTRY_PASSWORD`, or a file named
    /// by `SCHEMA_REGISTRY_PASSWORD_FILE`.
    pub password: Option<String>,
    /// CA certificate (PEM) to trust for an `https://` registry; env
    /// `SCHEMA_REGISTRY_CA_FILE`. Unset: the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
}

/// Neo4j settings.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Neo4jSection {
    /// Bolt URI; env `NEO4J_URI`.
    pub uri: String,
    /// User; env `NEO4J_USER`.
    pub user: String,
    /// Password; env `NEO4J_PASSWORD`, or a file named by `NEO4J_PASSWORD_FILE`.
    pub password: String,
    /// CA certificate (PEM) to trust for `bolt+s://` / `neo4j+s://`; env
    /// `NEO4J_CA_FILE`. Unset: the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
}

/// Worker tuning.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelineSection {
    /// Most records per write transaction: a sink's batch, or about one
    /// ingest lane's share of its batch (see [`PipelineSection::ingest_batch`]).
    pub max_batch: usize,
    /// Parallel Postgres transactions per ingest batch (split by partition,
    /// which never share a user). Two keeps both cores of a small box busy.
    pub write_lanes: usize,
    /// Longest wait to fill a batch once its first record is in, ms. Short
    /// on purpose: under load a batch fills by itself from the records that
    /// queued while the last one was written (up to `max_batch`), so the
    /// linger only ever delays a light load. 5 ms kept the preloaded ingest
    /// as fast as 50 ms did and cut its p99 at 5,000/s from ~400 to ~90 ms.
    pub batch_linger_ms: u64,
    /// Address for `/metrics`, `/healthz`, `/readyz`; env `NOVYRA_METRICS_ADDR`.
    pub metrics_addr: String,
    /// Score from which a concept counts as mastered.
    pub mastery_threshold: f64,
    /// Seconds between reconciliations inside `novyra run` (and `novyra
    /// graph`); 0 turns them off. Default: nightly.
    pub reconcile_interval_secs: u64,
    /// The largest share of the graph (nodes, links and edges) one
    /// reconciliation may delete without `--force`: a run that would delete
    /// more is refused, since that is likelier a broken input than drift.
    pub reconcile_max_delete_share: f64,
    /// Mastery keys per spill bucket of a reconciliation: its memory grows
    /// with this, not with the graph (about 1 KiB per key, all sides, at
    /// the peak), while each bucket costs a few small files and queries.
    pub reconcile_bucket_rows: usize,
    /// Whether the ingest relays its outbox to the mastery topic. Off only
    /// for a replay into another schema, whose mastery updates the live
    /// topic already holds.
    pub relay: bool,
    /// Seconds between refreshes of the `leaderboard` materialized view by
    /// the ingest worker; 0 turns them off. Default: 5 minutes.
    pub leaderboard_refresh_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            topic_prefix: "novyra.".into(),
            group_prefix: None,
            kafka: KafkaSection::default(),
            database: DatabaseSection::default(),
            registry: RegistrySection::default(),
            neo4j: Neo4jSection::default(),
            pipeline: PipelineSection::default(),
        }
    }
}

impl Default for KafkaSection {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            properties: BTreeMap::new(),
            replication_factor: None,
            attempts_retention_ms: -1,
        }
    }
}

impl Default for DatabaseSection {
    fn default() -> Self {
        Self {
            url: String::new(),
            migrate_url: None,
            session_url: None,
            analytics_url: None,
            schema: None,
            max_connections: 8,
            transaction_timeout_ms: novyra_store::DEFAULT_TRANSACTION_TIMEOUT.as_millis() as u64,
        }
    }
}

impl Default for RegistrySection {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8081/apis/ccompat/v7".into(),
            username: None,
            password: None,
            ca_file: None,
        }
    }
}

impl Default for Neo4jSection {
    fn default() -> Self {
        Self {
            uri: "127.0.0.1:7687".into(),
            user: "neo4j".into(),
            password: String::new(),
            ca_file: None,
        }
    }
}

impl PipelineSection {
    /// Records the ingest takes per batch: `max_batch` for each write lane,
    /// so each lane's transaction carries about `max_batch` attempts (as
    /// the bench's COPY ceiling does) instead of a lane's fraction of it.
    /// Per-transaction costs (the fence, the catalogue read, planning, the
    /// commit) then spread over twice the rows: on the 2-core bench machine
    /// 35,342-35,472 attempts/s against 27,432-29,761/s at `max_batch`
    /// per batch (docs/benchmarks.md). Under light load batches stay small.
    pub fn ingest_batch(&self) -> usize {
        self.max_batch.saturating_mul(self.write_lanes.max(1))
    }
}

impl Default for PipelineSection {
    fn default() -> Self {
        Self {
            max_batch: 10_000,
            write_lanes: 2,
            batch_linger_ms: 5,
            metrics_addr: "127.0.0.1:9464".into(),
            mastery_threshold: 0.95,
            reconcile_interval_secs: 86_400,
            reconcile_max_delete_share: 0.05,
            reconcile_bucket_rows: 50_000,
            relay: true,
            leaderboard_refresh_secs: 300,
        }
    }
}

impl std::fmt::Debug for KafkaSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaSection")
            .field("brokers", &self.brokers)
            .field(
                "properties",
                &novyra_kafka::config::redacted(&self.properties),
            )
            .field("replication_factor", &self.replication_factor)
            .field("attempts_retention_ms", &self.attempts_retention_ms)
            .finish()
    }
}

/// Environment variables that set librdkafka security properties, so a
/// deployment points at a managed Kafka with environment changes only.
/// Secrets may come from a file instead (`KAFKA_SASL_PASSWORD_FILE`).
pub const KAFKA_SECURITY_ENV: [(&str, &str); 6] = [
    ("KAFKA_SECURITY_PROTOCOL", "security.protocol"),
    ("KAFKA_SASL_MECHANISM", "sasl.mechanism"),
    ("KAFKA_SASL_USERNAME", "sasl.username"),
    ("KAFKA_SASL_PASSWORD", "sasl.password"),
    ("KAFKA_SSL_CA_LOCATION", "ssl.ca.location"),
    (
        "KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM",
        "ssl.endpoint.identification.algorithm",
    ),
];

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("topic_prefix", &self.topic_prefix)
            .field("group_prefix", &self.group_prefix)
            .field("kafka.brokers", &self.kafka.brokers)
            .field("database.url", &"<redacted>")
            .field("database.schema", &self.database.schema)
            .field("registry.url", &self.registry.url)
            .field("neo4j.uri", &self.neo4j.uri)
            .field("pipeline", &self.pipeline)
            .finish()
    }
}

impl Config {
    /// Loads defaults, then `file` if given, then the environment, then checks.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with(file, |k| std::env::var(k).ok())
    }

    /// As [`Config::load`] with an injectable environment (for tests).
    pub fn load_with(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut cfg = match file {
            Some(p) => {
                let path = p.display().to_string();
                let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str::<Config>(&text).map_err(|e| ConfigError::Parse {
                    path,
                    message: e.to_string(),
                })?
            }
            None => Config::default(),
        };
        let set = |target: &mut String, key: &str| {
            if let Some(v) = env(key) {
                *target = v;
            }
        };
        set(&mut cfg.topic_prefix, "NOVYRA_TOPIC_PREFIX");
        set(&mut cfg.kafka.brokers, "KAFKA_BROKERS");
        set(&mut cfg.database.url, "DATABASE_URL");
        set(&mut cfg.registry.url, "SCHEMA_REGISTRY_URL");
        set(&mut cfg.neo4j.uri, "NEO4J_URI");
        set(&mut cfg.neo4j.user, "NEO4J_USER");
        if let Some(ca) = env("NEO4J_CA_FILE") {
            cfg.neo4j.ca_file = Some(ca.into());
        }
        set(&mut cfg.neo4j.password, "NEO4J_PASSWORD");
        set(&mut cfg.pipeline.metrics_addr, "NOVYRA_METRICS_ADDR");
        if let Some(p) = env("NEO4J_PASSWORD_FILE") {
            cfg.neo4j.password = std::fs::read_to_string(&p)
                .map_err(|e| ConfigError::Invalid {
                    key: "NEO4J_PASSWORD_FILE",
                    message: e.to_string(),
                })?
                .trim_end()
                .to_owned();
        }
        for (var, prop) in KAFKA_SECURITY_ENV {
            if let Some(v) = env(var) {
                cfg.kafka.properties.insert(prop.to_owned(), v);
            }
        }
        if let Some(p) = env("KAFKA_SASL_PASSWORD_FILE") {
            let pw = std::fs::read_to_string(&p).map_err(|e| ConfigError::Invalid {
                key: "KAFKA_SASL_PASSWORD_FILE",
                message: e.to_string(),
            })?;
            cfg.kafka
                .properties
                .insert("sasl.password".to_owned(), pw.trim_end().to_owned());
        }
        if let Some(v) = env("NOVYRA_GROUP_PREFIX") {
            cfg.group_prefix = Some(v).filter(|s| !s.is_empty());
        }
        if let Some(v) = env("MIGRATION_DATABASE_URL") {
            cfg.database.migrate_url = Some(v);
        }
        if let Some(v) = env("ANALYTICS_DATABASE_URL") {
            cfg.database.analytics_url = Some(v).filter(|s| !s.is_empty());
        }
        if let Some(v) = env("DATABASE_SESSION_URL") {
            cfg.database.session_url = Some(v).filter(|s| !s.is_empty());
        }
        if let Some(v) = env("NOVYRA_DB_SCHEMA") {
            cfg.database.schema = Some(v).filter(|s| !s.is_empty());
        }
        if let Some(v) = env("SCHEMA_REGISTRY_USER") {
            cfg.registry.username = Some(v);
        }
        if let Some(v) = env("SCHEMA_REGISTRY_PASSWORD") {
            cfg.registry.password = Some(v);
        }
        if let Some(p) = env("SCHEMA_REGISTRY_PASSWORD_FILE") {
            let pw = std::fs::read_to_string(&p).map_err(|e| ConfigError::Invalid {
                key: "SCHEMA_REGISTRY_PASSWORD_FILE",
                message: e.to_string(),
            })?;
            cfg.registry.password = Some(pw.trim_end().to_owned());
        }
        if let Some(ca) = env("SCHEMA_REGISTRY_CA_FILE") {
            cfg.registry.ca_file = Some(ca.into());
        }
        cfg.check()?;
        Ok(cfg)
    }

    /// Cross-field checks at start-up.
    pub fn check(&self) -> Result<(), ConfigError> {
        let bad = |key, message: &str| {
            Err(ConfigError::Invalid {
                key,
                message: message.to_owned(),
            })
        };
        if self.database.url.is_empty() {
            return bad("database.url", "not set (set DATABASE_URL)");
        }
        if !self.database.url.starts_with("postgres://")
            && !self.database.url.starts_with("postgresql://")
        {
            return bad("database.url", "must be a postgres:// URL");
        }
        if let Err(e) = novyra_store::connect::split_tls_params(&self.database.url) {
            return bad("database.url", &e.to_string());
        }
        if self.database.transaction_timeout_ms == 0 {
            return bad("database.transaction_timeout_ms", "must be above 0");
        }
        for (key, env_var, url) in [
            (
                "database.analytics_url",
                "ANALYTICS_DATABASE_URL",
                &self.database.analytics_url,
            ),
            (
                "database.session_url",
                "DATABASE_SESSION_URL",
                &self.database.session_url,
            ),
        ] {
            let Some(url) = url else { continue };
            if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
                return bad(key, &format!("must be a postgres:// URL (set {env_var})"));
            }
            if let Err(e) = novyra_store::connect::split_tls_params(url) {
                return bad(key, &e.to_string());
            }
        }
        if self.kafka.brokers.trim().is_empty() {
            return bad("kafka.brokers", "empty (set KAFKA_BROKERS)");
        }
        if !self.registry.url.starts_with("http://") && !self.registry.url.starts_with("https://") {
            return bad(
                "registry.url",
                "must be an http(s) URL (set SCHEMA_REGISTRY_URL)",
            );
        }
        if self.pipeline.max_batch == 0 {
            return bad("pipeline.max_batch", "must be at least 1");
        }
        if !(1..=64).contains(&self.pipeline.write_lanes) {
            return bad("pipeline.write_lanes", "must be within 1..=64");
        }
        if !(0.0..=1.0).contains(&self.pipeline.mastery_threshold) {
            return bad("pipeline.mastery_threshold", "must be within 0..=1");
        }
        if !(0.0..=1.0).contains(&self.pipeline.reconcile_max_delete_share) {
            return bad(
                "pipeline.reconcile_max_delete_share",
                "must be within 0..=1",
            );
        }
        if self.pipeline.reconcile_bucket_rows == 0 {
            return bad("pipeline.reconcile_bucket_rows", "must be at least 1");
        }
        if let Some(s) = &self.database.schema {
            if !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return bad("database.schema", "only letters, digits and _ are allowed");
            }
        }
        Ok(())
    }

    /// The full names of the topics `group` consumes (the topic table).
    pub fn topics(&self, group: Group) -> Vec<String> {
        group.topics().into_iter().map(|t| self.topic(t)).collect()
    }

    /// The topic's full name with this deployment's prefix.
    pub fn topic(&self, topic: Topic) -> String {
        topic.name(&self.topic_prefix)
    }

    /// Consumer group id for a worker: `<prefix without trailing dot>-<name>`,
    /// so `novyra.` gives `novyra-ingest` and a test prefix gets its own groups.
    pub fn group(&self, name: &str) -> String {
        format!("{}-{name}", self.group_base())
    }

    /// What group ids start with, before `-<suffix>`.
    pub fn group_base(&self) -> String {
        match &self.group_prefix {
            Some(p) => p.clone(),
            None => self.topic_prefix.trim_end_matches('.').to_owned(),
        }
    }

    /// Kafka client settings.
    pub fn kafka(&self) -> novyra_kafka::KafkaConfig {
        novyra_kafka::KafkaConfig {
            brokers: self.kafka.brokers.clone(),
            properties: self.kafka.properties.clone(),
            reader_group: self.group(novyra_core::topics::READER_GROUP_SUFFIX),
        }
    }

    /// Runtime store settings.
    pub fn store(&self) -> novyra_store::StoreConfig {
        novyra_store::StoreConfig {
            url: self.database.url.clone(),
            session_url: self.database.session_url.clone(),
            schema: self.database.schema.clone(),
            max_connections: self.database.max_connections,
            transaction_timeout: std::time::Duration::from_millis(
                self.database.transaction_timeout_ms,
            ),
        }
    }

    /// Store settings for the analysts' reads: the replica when
    /// `database.analytics_url` is set, else the primary.
    pub fn analytics_store(&self) -> novyra_store::StoreConfig {
        novyra_store::StoreConfig {
            url: self
                .database
                .analytics_url
                .clone()
                .unwrap_or_else(|| self.database.url.clone()),
            session_url: None,
            ..self.store()
        }
    }

    /// Migration store settings.
    pub fn migrate_store(&self) -> novyra_store::StoreConfig {
        novyra_store::StoreConfig {
            url: self
                .database
                .migrate_url
                .clone()
                .unwrap_or_else(|| self.database.url.clone()),
            session_url: None,
            ..self.store()
        }
    }

    /// Registry client settings.
    pub fn registry(&self) -> novyra_registry::RegistryConfig {
        novyra_registry::RegistryConfig {
            username: self.registry.username.clone(),
            password: self.registry.password.clone(),
            ca_file: self.registry.ca_file.clone(),
            ..novyra_registry::RegistryConfig::new(self.registry.url.clone())
        }
    }

    /// Connects the graph store (lazily).
    pub fn graph(&self) -> Result<novyra_graph::GraphStore, novyra_graph::GraphError> {
        novyra_graph::GraphStore::connect(
            &self.neo4j.uri,
            &self.neo4j.user,
            &self.neo4j.password,
            self.neo4j.ca_file.as_deref(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_overrides_and_bad_keys_fail_naming_the_key() {
        let env = |k: &str| match k {
            "DATABASE_URL" => Some("postgres://u:p@h/db".to_owned()),
            "KAFKA_BROKERS" => Some("k:1".to_owned()),
            _ => None,
        };
        let cfg = Config::load_with(None, env).expect("loads");
        assert_eq!(cfg.kafka.brokers, "k:1");
        assert!(
            !format!("{cfg:?}").contains("u:p"),
            "credentials must not be printed"
        );

        let err = Config::load_with(None, |_| None).expect_err("no database url");
        assert!(err.to_string().contains("database.url"), "{err}");

        let dir = std::env::temp_dir().join(format!("novyra-cfg-{}", std::process::id()));
        std::fs::write(&dir, "[kafka]\nbrokerz = \"x\"\n").expect("write");
        let err = Config::load_with(Some(&dir), env).expect_err("unknown key");
        assert!(err.to_string().contains("brokerz"), "{err}");
        std::fs::write(&dir, "[pipeline]\nreconcile_bucket_rows = 0\n").expect("write");
        let err = Config::load_with(Some(&dir), env).expect_err("empty buckets");
        assert!(
            err.to_string().contains("pipeline.reconcile_bucket_rows"),
            "{err}"
        );
        let _ = std::fs::remove_file(&dir);
    }

    #[test]
    fn each_ingest_lane_gets_about_max_batch_rows() {
        let mut p = PipelineSection {
            max_batch: 10_000,
            write_lanes: 2,
            ..PipelineSection::default()
        };
        assert_eq!(p.ingest_batch(), 20_000);
        p.write_lanes = 1;
        assert_eq!(p.ingest_batch(), 10_000);
        p.max_batch = usize::MAX;
        p.write_lanes = 3;
        assert_eq!(p.ingest_batch(), usize::MAX, "saturates, never wraps");
    }

    #[test]
    fn analysts_read_from_their_own_url_when_given() {
        let base = |k: &str| match k {
            "DATABASE_URL" => Some("postgres://app@primary/db".to_owned()),
            _ => None,
        };
        let cfg = Config::load_with(None, base).expect("loads");
        assert_eq!(cfg.analytics_store().url, "postgres://app@primary/db");
        let cfg = Config::load_with(None, |k| match k {
            "ANALYTICS_DATABASE_URL" => Some("postgres://analyst@replica:5433/db".to_owned()),
            k => base(k),
        })
        .expect("loads");
        assert_eq!(
            cfg.analytics_store().url,
            "postgres://analyst@replica:5433/db"
        );
        assert_eq!(cfg.store().url, "postgres://app@primary/db");
        let err = Config::load_with(None, |k| match k {
            "ANALYTICS_DATABASE_URL" => Some("replica:5433".to_owned()),
            k => base(k),
        })
        .expect_err("not a URL");
        assert!(err.to_string().contains("database.analytics_url"), "{err}");
    }

    #[test]
    fn the_session_url_serves_only_the_session_and_bad_ones_fail_fast() {
        let base = |k: &str| match k {
            "DATABASE_URL" => Some("postgres://app@bouncer:6432/db".to_owned()),
            "DATABASE_SESSION_URL" => Some("postgres://app@bouncer:6432/db_session".to_owned()),
            _ => None,
        };
        let cfg = Config::load_with(None, base).expect("loads");
        assert_eq!(cfg.store().url, "postgres://app@bouncer:6432/db");
        assert_eq!(
            cfg.store().session_url.as_deref(),
            Some("postgres://app@bouncer:6432/db_session")
        );
        // The analysts' store and migrations never take the lease.
        assert_eq!(cfg.analytics_store().session_url, None);
        assert_eq!(cfg.migrate_store().session_url, None);
        let err = Config::load_with(None, |k| match k {
            "DATABASE_SESSION_URL" => Some("bouncer:6432/db".to_owned()),
            k => base(k),
        })
        .expect_err("not a URL");
        assert!(err.to_string().contains("database.session_url"), "{err}");
        assert!(err.to_string().contains("DATABASE_SESSION_URL"), "{err}");
    }

    #[test]
    fn the_transaction_deadline_reaches_the_store_and_zero_fails_fast() {
        let env = |k: &str| (k == "DATABASE_URL").then(|| "postgres://app@h/db".to_owned());
        let cfg = Config::load_with(None, env).expect("loads");
        assert_eq!(
            cfg.store().transaction_timeout,
            std::time::Duration::from_secs(60)
        );
        let file =
            std::env::temp_dir().join(format!("novyra-deadline-{}.toml", std::process::id()));
        std::fs::write(&file, "[database]\ntransaction_timeout_ms = 1500\n").expect("write");
        let cfg = Config::load_with(Some(&file), env).expect("loads");
        assert_eq!(
            cfg.store().transaction_timeout,
            std::time::Duration::from_millis(1500)
        );
        std::fs::write(&file, "[database]\ntransaction_timeout_ms = 0\n").expect("write");
        let err = Config::load_with(Some(&file), env).expect_err("zero");
        let _ = std::fs::remove_file(&file);
        assert!(
            err.to_string().contains("database.transaction_timeout_ms"),
            "{err}"
        );
    }

    #[test]
    fn tls_settings_come_from_the_environment_and_bad_ones_fail_fast() {
        let pw = std::env::temp_dir().join(format!("novyra-sr-pw-{}", std::process::id()));
        std::fs::write(&pw, "s3cret\n").expect("write");
        let pw_path = pw.display().to_string();
        let env = |k: &str| match k {
            "DATABASE_URL" => Some("postgres://u:p@h/db?sslmode=verify-full".to_owned()),
            "SCHEMA_REGISTRY_URL" => Some("https://sr:8444/apis/ccompat/v7".to_owned()),
            "SCHEMA_REGISTRY_USER" => Some("novyra".to_owned()),
            "SCHEMA_REGISTRY_PASSWORD_FILE" => Some(pw_path.clone()),
            "SCHEMA_REGISTRY_CA_FILE" => Some("/etc/ca.crt".to_owned()),
            _ => None,
        };
        let cfg = Config::load_with(None, env).expect("loads");
        let reg = cfg.registry();
        assert_eq!(
            reg.password.as_deref(),
            Some("s3cret"),
            "file, newline trimmed"
        );
        assert_eq!(reg.ca_file.as_deref(), Some(Path::new("/etc/ca.crt")));
        assert!(!format!("{reg:?}").contains("s3cret"), "{reg:?}");
        let _ = std::fs::remove_file(&pw);

        let err = Config::load_with(None, |k| match k {
            "DATABASE_URL" => Some("postgres://h/db?sslmode=verify".to_owned()),
            _ => None,
        })
        .expect_err("bad sslmode");
        assert!(
            err.to_string().contains("database.url") && err.to_string().contains("sslmode"),
            "{err}"
        );
    }
}
