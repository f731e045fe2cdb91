//! A worker's `/metrics`, as the bench reads it: fetched with reqwest,
//! parsed with prometheus-parse, and reduced to the series of one group.

use std::collections::BTreeMap;
use std::time::Duration;

use prometheus_parse::{Scrape, Value};

/// One scrape, keyed by (metric, group label).
#[derive(Debug, Clone, Default)]
pub(crate) struct Metrics(BTreeMap<(String, String), Value>);

impl Metrics {
    /// Parses a text exposition.
    pub(crate) fn parse(text: &str) -> anyhow::Result<Self> {
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))?;
        Ok(Self(
            scrape
                .samples
                .into_iter()
                .map(|s| {
                    let group = s.labels.get("group").unwrap_or_default().to_owned();
                    ((s.metric, group), s.value)
                })
                .collect(),
        ))
    }

    /// A counter or gauge of `group` (0 if absent).
    pub(crate) fn value(&self, metric: &str, group: &str) -> f64 {
        match self.0.get(&(metric.to_owned(), group.to_owned())) {
            Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
            _ => 0.0,
        }
    }

    /// A histogram's cumulative buckets `(upper bound, count)` of `group`.
    pub(crate) fn buckets(&self, metric: &str, group: &str) -> Vec<(f64, f64)> {
        match self.0.get(&(metric.to_owned(), group.to_owned())) {
            Some(Value::Histogram(h)) => {
                let mut b: Vec<(f64, f64)> = h.iter().map(|c| (c.less_than, c.count)).collect();
                b.sort_by(|x, y| x.0.total_cmp(&y.0));
                b
            }
            _ => Vec::new(),
        }
    }
}

/// Scrapes `http://<addr>/metrics`.
pub(crate) async fn scrape(addr: &str) -> anyhow::Result<Metrics> {
    let text = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()?
        .get(format!("http://{addr}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Metrics::parse(&text)
}

/// The cumulative buckets of `after - before` for `group`.
pub(crate) fn histogram_delta(
    before: &Metrics,
    after: &Metrics,
    metric: &str,
    group: &str,
) -> Vec<(f64, f64)> {
    let old: BTreeMap<u64, f64> = before
        .buckets(metric, group)
        .into_iter()
        .map(|(le, n)| (le.to_bits(), n))
        .collect();
    after
        .buckets(metric, group)
        .into_iter()
        .map(|(le, n)| (le, n - old.get(&le.to_bits()).copied().unwrap_or(0.0)))
        .collect()
}

pub(crate) use novyra_pipeline::metrics::quantile;

#[cfg(test)]
mod tests {
    use super::*;

    const E2E: &str = "novyra_end_to_end_latency_seconds";

    #[test]
    fn the_workers_own_exposition_parses_and_deltas_by_group() {
        // The real encoder's output, not a hand-written sample.
        let health = novyra_pipeline::Health::new();
        health.metrics.init_group("g");
        health.metrics.init_group("other");
        let e2e = health.metrics.end_to_end.with_label_values(&["g"]);
        for _ in 0..10 {
            e2e.observe(0.0005);
        }
        let before = Metrics::parse(&health.metrics.render()).expect("parse");
        for _ in 0..20 {
            e2e.observe(0.0005);
        }
        for _ in 0..10 {
            e2e.observe(1e6);
        }
        health
            .metrics
            .committed
            .with_label_values(&["g"])
            .inc_by(40);
        let after = Metrics::parse(&health.metrics.render()).expect("parse");
        assert_eq!(
            after.value("novyra_consumer_records_committed_total", "g"),
            40.0
        );
        assert_eq!(
            after.value("novyra_consumer_records_committed_total", "other"),
            0.0
        );
        let d = histogram_delta(&before, &after, E2E, "g");
        assert_eq!(d.first(), Some(&(0.001, 20.0)));
        assert_eq!(d.last(), Some(&(f64::INFINITY, 30.0)));
        assert!(histogram_delta(&before, &after, E2E, "other")
            .iter()
            .all(|b| b.1 == 0.0));
    }
}
