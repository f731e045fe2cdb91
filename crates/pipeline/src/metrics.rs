//! Every metric of a worker process, in one Prometheus registry with fixed
//! label sets: a group, a dependency, a reason class, a topic and its
//! partition — never a user id or a key, so the series count is bounded
//! by the deployment, not by the data.

use novyra_kafka::rdkafka::message as rdkafka_message;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry,
    TextEncoder,
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
    /// Scheduled reconciliations that failed or refused, by reason. Nothing
    /// was written for `incomplete` (it could not see the whole truth),
    /// `delete_brake` (it would have deleted too much) and `error` (any
    /// other failure before the repairs); `interrupted` failed during its
    /// repairs and may have written some of them.
    pub reconcile_aborted: IntCounterVec,
    /// Kafka create time to downstream commit, per record, by group.
    pub end_to_end: HistogramVec,
    /// An attempt's Kafka timestamp to its `MASTERED_BY` edge committed in
    /// Neo4j, across all three hops (ingest, relay, graph sink): the
    /// freshness a reader of the graph sees. Observed once per mastery
    /// record with a `novyra-source-ts` header, from the oldest attempt it
    /// applies, so it errs towards stale.
    pub graph_freshness: Histogram,
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

/// 1 ms to ~2 min in steps of 25%, fine enough for percentiles.
fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.001, 1.25, 53).unwrap_or_default()
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
        let graph_freshness = Histogram::with_opts(
            HistogramOpts::new(
                "novyra_graph_freshness_seconds",
                "time from an attempt's Kafka timestamp to its MASTERED_BY edge committed in Neo4j",
            )
            .buckets(latency_buckets()),
        )
        .expect("valid metric definition");
        r.register(Box::new(graph_freshness.clone()))
            .expect("metric registered once");
        Self {
            graph_freshness,
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
                "scheduled reconciliations that failed or refused, by reason (only interrupted may have written part of its repairs)",
                &["reason"],
            ),
            end_to_end: histogram(
                &r,
                "novyra_end_to_end_latency_seconds",
                "time from the record's Kafka timestamp to its downstream commit",
                latency_buckets(),
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

    /// Records the graph freshness of mastery records just committed to
    /// Neo4j (those carrying a `novyra-source-ts` header; see
    /// [`Metrics::graph_freshness`]).
    pub fn observe_freshness<M: rdkafka_message::Message>(&self, msgs: &[M]) {
        let now = chrono::Utc::now().timestamp_millis();
        for t in msgs.iter().filter_map(source_ts) {
            self.graph_freshness
                .observe((now - t).max(0) as f64 / 1000.0);
        }
    }

    /// Quantiles `qs` of [`Metrics::graph_freshness`] so far, in seconds
    /// (None before the first observation).
    pub fn freshness_quantiles(&self, qs: &[f64]) -> Option<Vec<f64>> {
        quantiles_of(&self.graph_freshness, qs)
    }

    /// Quantiles `qs` of `group`'s [`Metrics::end_to_end`] latency so far,
    /// in seconds (None before the first observation): one hop's share of
    /// the freshness.
    pub fn end_to_end_quantiles(&self, group: &str, qs: &[f64]) -> Option<Vec<f64>> {
        quantiles_of(&self.end_to_end.with_label_values(&[group]), qs)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// Quantiles `qs` of everything `h` observed (None before the first).
fn quantiles_of(h: &Histogram, qs: &[f64]) -> Option<Vec<f64>> {
    use prometheus::core::Metric;
    let m = h.metric();
    let h = m.get_histogram();
    let n = h.get_sample_count();
    if n == 0 {
        return None;
    }
    let mut buckets: Vec<(f64, f64)> = h
        .get_bucket()
        .iter()
        .map(|b| (b.upper_bound(), b.cumulative_count() as f64))
        .collect();
    buckets.push((f64::INFINITY, n as f64));
    Some(qs.iter().map(|&q| quantile(&buckets, q)).collect())
}

/// The `novyra-source-ts` header of a mastery record: the Kafka timestamp
/// (ms) of the oldest attempt it applies, as the relay wrote it.
pub fn source_ts<M: rdkafka_message::Message>(m: &M) -> Option<i64> {
    use rdkafka_message::Headers;
    m.headers()?
        .iter()
        .find(|h| h.key == novyra_core::topics::SOURCE_TS_HEADER)
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
        .and_then(|v| v.parse().ok())
}

/// Kafka headers for a mastery record: its trace context and where its
/// freshness is measured from; None when it has neither.
pub fn mastery_headers(
    traceparent: Option<&str>,
    source_ts: Option<i64>,
) -> Option<rdkafka_message::OwnedHeaders> {
    let traced = crate::telemetry::headers_for(traceparent);
    let Some(t) = source_ts else {
        return traced;
    };
    let value = t.to_string();
    Some(traced.unwrap_or_default().insert(rdkafka_message::Header {
        key: novyra_core::topics::SOURCE_TS_HEADER,
        value: Some(&value),
    }))
}

/// The `q` quantile of cumulative buckets, interpolated linearly inside
/// its bucket: Prometheus' own `histogram_quantile`, which no maintained
/// crate offers over parsed buckets.
pub fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let total = buckets.last().map_or(0.0, |b| b.1);
    if total <= 0.0 {
        return f64::NAN;
    }
    let target = q * total;
    let mut prev = (0.0, 0.0);
    for &(le, cum) in buckets {
        if cum >= target {
            if le.is_infinite() {
                return prev.0;
            }
            let span = (cum - prev.1).max(f64::MIN_POSITIVE);
            return prev.0 + (le - prev.0) * (target - prev.1) / span;
        }
        prev = (le, cum);
    }
    prev.0
}

/// A counter's rate over the time it actually moved: sampled every
/// [`RateProbe::EVERY`] from `start` to `finish`, it leaves out the idle
/// time before the first increase (start-up, group joins) and after the
/// last (draining checks), which a total over the wall clock would count.
#[derive(Debug)]
pub struct RateProbe {
    samples: std::sync::Arc<std::sync::Mutex<Vec<(std::time::Instant, u64)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl RateProbe {
    /// Sampling period.
    pub const EVERY: std::time::Duration = std::time::Duration::from_millis(20);

    /// Starts sampling `counter`.
    pub fn start(counter: prometheus::IntCounter) -> Self {
        let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let task = {
            let samples = samples.clone();
            tokio::spawn(async move {
                loop {
                    if let Ok(mut s) = samples.lock() {
                        s.push((std::time::Instant::now(), counter.get()));
                    }
                    tokio::time::sleep(Self::EVERY).await;
                }
            })
        };
        Self { samples, task }
    }

    /// Stops sampling; the rate (see [`increase_rate`]), None if the
    /// counter never moved.
    pub fn finish(self) -> Option<f64> {
        self.task.abort();
        let mut s = self.samples.lock().ok()?.clone();
        if let Some(&(_, last)) = s.last() {
            // The final value, should it have moved since the last sample.
            s.push((std::time::Instant::now(), last));
        }
        increase_rate(&s)
    }
}

/// Increase per second between the last sample before the first increase
/// and the first sample at the final value: an interval that holds every
/// increase, so the rate errs low, by at most two sampling periods.
pub fn increase_rate(samples: &[(std::time::Instant, u64)]) -> Option<f64> {
    let (first_value, last_value) = (samples.first()?.1, samples.last()?.1);
    let moved = samples.iter().position(|s| s.1 > first_value)?;
    let from = samples[moved - 1].0;
    let to = samples.iter().find(|s| s.1 == last_value)?.0;
    let secs = to.duration_since(from).as_secs_f64();
    (secs > 0.0).then(|| (last_value - first_value) as f64 / secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_spans_first_to_last_increase_only() {
        let t = std::time::Instant::now();
        let at = |ms: u64, n: u64| (t + std::time::Duration::from_millis(ms), n);
        // 100 before the probe, idle for 5 s (start-up), 1,000 more over
        // 2 s, idle again.
        let s = [
            at(0, 100),
            at(5_000, 100),
            at(6_000, 500),
            at(7_000, 1_100),
            at(9_000, 1_100),
        ];
        assert_eq!(increase_rate(&s), Some(500.0));
        assert_eq!(increase_rate(&[at(0, 0), at(10, 0)]), None);
        assert_eq!(increase_rate(&[]), None);
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let b = [
            (0.1, 50.0),
            (0.2, 90.0),
            (0.4, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert!((quantile(&b, 0.5) - 0.1).abs() < 1e-9);
        assert!((quantile(&b, 0.7) - 0.15).abs() < 1e-9);
        assert!((quantile(&b, 0.95) - 0.3).abs() < 1e-9);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn freshness_quantiles_come_from_the_observations() {
        let m = Metrics::new();
        assert!(m.freshness_quantiles(&[0.5]).is_none());
        for _ in 0..90 {
            m.graph_freshness.observe(0.1);
        }
        for _ in 0..10 {
            m.graph_freshness.observe(2.0);
        }
        let q = m.freshness_quantiles(&[0.5, 0.99]).expect("observed");
        // Within one bucket (25%) of the observed values.
        assert!(q[0] > 0.1 / 1.25 && q[0] < 0.1 * 1.25, "{q:?}");
        assert!(q[1] > 2.0 / 1.25 && q[1] < 2.0 * 1.25, "{q:?}");
    }
}
