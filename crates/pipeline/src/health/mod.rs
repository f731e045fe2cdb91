//! Readiness per dependency (`/readyz` and the `novyra_dependency_down`
//! gauge), next to the process's [`Metrics`]; the HTTP endpoints are in
//! [`http`], retry with backoff in [`retry`].

mod http;
mod retry;

pub use retry::retry;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::metrics::Metrics;

/// Shared metrics and readiness state.
#[derive(Clone)]
pub struct Health {
    /// The process's metrics.
    pub metrics: Metrics,
    deps: Arc<Mutex<BTreeMap<&'static str, Option<String>>>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Health")
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// Fresh metrics, every dependency presumed up.
    pub fn new() -> Self {
        Self {
            metrics: Metrics::new(),
            deps: Arc::new(Mutex::new(BTreeMap::new())),
        }
    }

    /// Marks a dependency up (`None`) or down with the reason.
    pub fn set(&self, dep: &'static str, error: Option<String>) {
        self.metrics.retries.with_label_values(&[dep]);
        self.metrics
            .dependency_down
            .with_label_values(&[dep])
            .set(i64::from(error.is_some()));
        if let Ok(mut d) = self.deps.lock() {
            d.insert(dep, error);
        }
    }

    /// `None` when every dependency is up, else the failures.
    pub fn not_ready(&self) -> Option<String> {
        let d = self.deps.lock().ok()?;
        let down: Vec<String> = d
            .iter()
            .filter_map(|(k, v)| v.as_ref().map(|e| format!("{k}: {e}")))
            .collect();
        (!down.is_empty()).then(|| down.join("\n"))
    }
}
