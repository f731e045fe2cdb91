//! Every metric of a worker process, in one Prometheus registry with fixed
//! label sets: a group, a dependency, a reason class, a topic and its
//! partition — never a user id or a key, so the series count is bounded
//! by the deployment, not by the data.

use novyra_kafka::rdkafka::message as rdkafka_message;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// The process's metrics.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Records consumed, by group.
    pub consumed: IntCounterVec,
    /// Records committed downstream, by group.
    pub committed: IntCounterVec,
    /// Records sent to the DLQ, by group and reason.
    pub dlq: IntCounterVec,
    /// Batch write duration, by group.
    pub batch_seconds: HistogramVec,
    /// Batch sizes, by group.
    pub batch_size: HistogramVec,
    /// Rebalances, by group.
    pub rebalances: IntCounterVec,
    /// Retries of a down dependency, by dependency.
    pub retries: IntCounterVec,
    /// Outbox rows relayed.
    pub relayed: IntCounterVec,
    /// Drift found by scheduled reconciliation, by kind.
    pub reconcile_drift: IntCounterVec,
    /// Mastery rows a recomputation read, by result (`changed`, `unchanged`).
    pub recomputed: IntCounterVec,
    /// Scheduled reconciliations that wrote nothing, by reason
    /// (`incomplete`: it could not see the whole truth; `delete_brake`: it
    /// would have deleted too much; `error`: anything else).
    pub reconcile_aborted: IntCounterVec,
    /// Kafka create time to downstream commit, per record, by group.
    pub end_to_end: HistogramVec,
    /// 1 while a dependency is unreachable, by dependency.
    pub dependency_down: IntGaugeVec,
    /// Records behind the partition's end, by group, topic and partition
    /// (as of the last fetch; the partition label is bounded by the topic's
    /// partition count).
    pub lag: IntGaugeVec,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

fn counter(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition");
    r.register(Box::new(c.clone()))
        .expect("metric registered once");
    c
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> HistogramVec {
    let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), &["group"])
        .expect("valid metric definition");
    r.register(Box::new(h.clone()))
        .expect("metric registered once");
    h
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    #[allow(clippy::expect_used)]
    pub fn new() -> Self {
        let r = Registry::new();
        let dependency_down = IntGaugeVec::new(
            Opts::new(
                "novyra_dependency_down",
                "1 while a dependency is unreachable",
            ),
            &["dependency"],
        )
        .expect("valid metric definition");
        r.register(Box::new(dependency_down.clone()))
            .expect("metric registered once");
        let lag = IntGaugeVec::new(
            Opts::new(
                "novyra_consumer_lag_records",
                "records between the stored offset and the partition end",
            ),
            &["group", "topic", "partition"],
        )
        .expect("valid metric definition");
        r.register(Box::new(lag.clone()))
            .expect("metric registered once");
        Self {
            lag,
            consumed: counter(
                &r,
                "novyra_consumer_records_consumed_total",
                "records consumed",
                &["group"],
            ),
            committed: counter(
                &r,
                "novyra_consumer_records_committed_total",
                "records committed downstream",
                &["group"],
            ),
            dlq: counter(
                &r,
                "novyra_dlq_records_total",
                "records sent to the DLQ",
                &["group", "reason"],
            ),
            batch_seconds: histogram(
                &r,
                "novyra_batch_write_seconds",
                "batch write duration",
                prometheus::exponential_buckets(0.001, 2.0, 16).unwrap_or_default(),
            ),
            batch_size: histogram(
                &r,
                "novyra_batch_size_records",
                "records per batch",
                prometheus::exponential_buckets(1.0, 2.0, 16).unwrap_or_default(),
            ),
            reconcile_drift: counter(
                &r,
                "novyra_reconcile_drift_total",
                "drift found (and repaired) by scheduled reconciliation",
                &["kind"],
            ),
            recomputed: counter(
                &r,
                "novyra_mastery_recomputed_rows_total",
                "mastery rows recomputed after a change of BKT parameters, by result",
                &["result"],
            ),
            reconcile_aborted: counter(
                &r,
                "novyra_reconcile_aborted_total",
                "scheduled reconciliations that wrote nothing, by reason",
                &["reason"],
            ),
            end_to_end: histogram(
                &r,
                "novyra_end_to_end_latency_seconds",
                "time from the record's Kafka timestamp to its downstream commit",
                // 1 ms to ~2 min in steps of 25%, fine enough for percentiles.
                prometheus::exponential_buckets(0.001, 1.25, 53).unwrap_or_default(),
            ),
            rebalances: counter(
                &r,
                "novyra_consumer_rebalances_total",
                "rebalances seen",
                &["group"],
            ),
            retries: counter(
                &r,
                "novyra_dependency_retries_total",
                "retries of a failing dependency",
                &["dependency"],
            ),
            relayed: counter(
                &r,
                "novyra_outbox_relayed_total",
                "outbox rows published",
                &["topic"],
            ),
            dependency_down,
            registry: r,
        }
    }

    /// Creates a group's series at zero, so dashboards and alerts see the
    /// metric (and a rate of 0) before the first record, not "no data".
    pub fn init_group(&self, group: &str) {
        for c in [&self.consumed, &self.committed, &self.rebalances] {
            c.with_label_values(&[group]);
        }
        for h in [&self.batch_seconds, &self.batch_size, &self.end_to_end] {
            h.with_label_values(&[group]);
        }
    }

    /// Records the end-to-end latency of committed records, from their
    /// Kafka timestamp (the producer's create time) to now.
    pub fn observe_end_to_end<M: rdkafka_message::Message>(&self, group: &str, msgs: &[M]) {
        let now = chrono::Utc::now().timestamp_millis();
        let h = self.end_to_end.with_label_values(&[group]);
        for m in msgs {
            if let Some(t) = m.timestamp().to_millis() {
                h.observe((now - t).max(0) as f64 / 1000.0);
            }
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
