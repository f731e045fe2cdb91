//! Client configuration: brokers plus librdkafka properties passed through
//! untouched, so anything librdkafka supports (SASL, TLS, tuning) works
//! without a code change. See
//! <https://github.com/confluentinc/librdkafka/blob/master/CONFIGURATION.md>.

use std::collections::BTreeMap;

use rdkafka::config::ClientConfig;
use rdkafka::producer::FutureProducer;

use crate::KafkaError;

/// Brokers and pass-through properties.
#[derive(Debug, Clone, Default)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Extra librdkafka properties; they override the pipeline's defaults.
    pub properties: BTreeMap<String, String>,
}

impl KafkaConfig {
    /// Brokers only.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            properties: BTreeMap::new(),
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

    /// A consumer that never joins a group: for reading compacted topics,
    /// lag and tail without disturbing the pipeline.
    pub fn reader_config(&self) -> ClientConfig {
        self.client(&[
            ("group.id", "novyra-reader-unused"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("auto.offset.reset", "earliest"),
        ])
    }
}
