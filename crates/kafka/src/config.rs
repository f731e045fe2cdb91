//! Client configuration: brokers plus librdkafka properties passed through
//! untouched, so anything librdkafka supports (SASL, TLS, tuning) works
//! without a code change. See
//! <https://github.com/confluentinc/librdkafka/blob/master/CONFIGURATION.md>.

use std::collections::BTreeMap;

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::producer::FutureProducer;
use rdkafka::ClientContext;

use crate::KafkaError;

/// Brokers and pass-through properties.
#[derive(Clone, Default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Extra librdkafka properties; they override the pipeline's defaults.
    pub properties: BTreeMap<String, String>,
    /// The `group.id` of readers that never join or commit
    /// ([`KafkaConfig::reader_config`]). librdkafka still looks up its
    /// coordinator, so under ACLs a principal needs DESCRIBE on it; it
    /// follows the deployment's group prefix so [`crate::acls`] can grant
    /// it. Empty: `novyra-reader`.
    pub reader_group: String,
}

/// Whether a librdkafka property holds a secret (`sasl.password`,
/// `ssl.key.password`, `ssl.key.pem`, `sasl.oauthbearer.client.secret`...).
pub fn is_secret(key: &str) -> bool {
    [
        "password",
        "secret",
        "ssl.key.pem",
        "sasl.jaas",
        "sasl.oauthbearer.config",
    ]
    .iter()
    .any(|s| key.contains(s))
}

/// The properties with every secret value replaced, for logs and `Debug`.
pub fn redacted(props: &BTreeMap<String, String>) -> BTreeMap<&str, &str> {
    props
        .iter()
        .map(|(k, v)| {
            let v = if is_secret(k) {
                "<redacted>"
            } else {
                v.as_str()
            };
            (k.as_str(), v)
        })
        .collect()
}

impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("properties", &redacted(&self.properties))
            .field("reader_group", &self.reader_group)
            .finish()
    }
}

impl KafkaConfig {
    /// Brokers only.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            properties: BTreeMap::new(),
            reader_group: String::new(),
        }
    }

    /// A base client config with the pass-through properties applied last.
    pub fn client(&self, defaults: &[(&str, &str)]) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in defaults {
            c.set(*k, *v);
        }
        for (k, v) in &self.properties {
            c.set(k, v);
        }
        // NB: librdkafka logs its configuration only at debug=conf, which
        // the pipeline never sets; secrets stay out of its logs too.
        c
    }

    /// An idempotent producer: `acks=all` and `enable.idempotence` keep
    /// per-partition order across retries, which the compacted mastery topic
    /// relies on (the last record per key must be the newest version).
    pub fn producer(&self) -> Result<FutureProducer, KafkaError> {
        Ok(self
            .client(&[
                ("enable.idempotence", "true"),
                ("acks", "all"),
                ("linger.ms", "5"),
                ("compression.type", "lz4"),
                ("message.timeout.ms", "120000"),
                ("queue.buffering.max.messages", "200000"),
            ])
            .create()?)
    }

    /// Consumer defaults for a group worker. Offsets are stored by the
    /// worker only after its downstream write is confirmed
    /// (`enable.auto.offset.store=false`); auto-commit then flushes what
    /// was stored.
    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        self.client(&[
            ("group.id", group),
            ("enable.auto.commit", "true"),
            ("auto.commit.interval.ms", "1000"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
            ("partition.assignment.strategy", "cooperative-sticky"),
            ("session.timeout.ms", "30000"),
            ("fetch.wait.max.ms", "100"),
            ("isolation.level", "read_committed"),
            // Feeds the per-partition lag gauge (ClientContext::stats).
            ("statistics.interval.ms", "5000"),
        ])
    }

    /// A reader for a job that streams a whole topic through once
    /// (reconcile): librdkafka's prefetch is kept shallow, since with the
    /// defaults it queues up to 100,000 records per assigned partition for
    /// records handed on at once anyway. Measured over 2M mastery records
    /// on 12 partitions: peak RSS 248 MiB with the defaults, 118 MiB with
    /// 4 MiB per partition in about the same time, 87 MiB with 1 MiB at
    /// twice the time. Pass-through properties still win.
    pub fn snapshot_reader_config(&self) -> ClientConfig {
        let mut defaults = self.reader_defaults().to_vec();
        defaults.extend([
            ("queued.max.messages.kbytes", "4096"),
            ("queued.min.messages", "10000"),
        ]);
        self.client(&defaults)
    }

    /// The readers' group id.
    pub fn reader_group(&self) -> &str {
        if self.reader_group.is_empty() {
            "novyra-reader"
        } else {
            &self.reader_group
        }
    }

    /// A consumer that never joins a group: for reading compacted topics,
    /// lag and tail without disturbing the pipeline.
    pub fn reader_config(&self) -> ClientConfig {
        self.client(&self.reader_defaults())
    }

    fn reader_defaults(&self) -> [(&str, &str); 4] {
        [
            ("group.id", self.reader_group()),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
        ]
    }
}

/// A client context that remembers the last error librdkafka logged about
/// a broker (a TLS certificate it rejected, a failed SASL handshake), so a
/// call that fails with a bare "broker transport failure" can say which
/// broker and why. Logs are forwarded to `tracing` as usual.
#[derive(Debug, Default)]
pub struct Diagnosing {
    last: Mutex<Option<String>>,
}

impl ClientContext for Diagnosing {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        use RDKafkaLogLevel as L;
        match level {
            L::Emerg | L::Alert | L::Critical | L::Error => {
                tracing::error!(target: "librdkafka", "librdkafka: {fac} {message}");
                if let Ok(mut l) = self.last.lock() {
                    *l = Some(message.to_owned());
                }
            }
            L::Warning => tracing::warn!(target: "librdkafka", "librdkafka: {fac} {message}"),
            L::Notice | L::Info => {
                tracing::info!(target: "librdkafka", "librdkafka: {fac} {message}")
            }
            L::Debug => tracing::debug!(target: "librdkafka", "librdkafka: {fac} {message}"),
        }
    }
}

impl ConsumerContext for Diagnosing {}

/// `e`, with the reason librdkafka logged for it if there is one. The
/// client delivers its logs through its queue, which nothing else serves
/// in a one-shot read: this serves it briefly first.
pub fn diagnose(consumer: &BaseConsumer<Diagnosing>, e: rdkafka::error::KafkaError) -> KafkaError {
    for _ in 0..5 {
        let _ = consumer.poll(Duration::from_millis(20));
    }
    match consumer.context().last.lock().ok().and_then(|l| l.clone()) {
        Some(reason) => KafkaError::Broker { source: e, reason },
        None => KafkaError::Client(e),
    }
}
