//! The pipeline's workers, one module per consumer group, plus the outbox
//! relay, the all-in-one `run`, and the demo data generator.
//!
//! Files follow the data: `consumer` (polling, positioning, DLQ) feeds
//! `workers/*` (ingest, catalog, graph sink, relay, recompute, and the
//! change-stream loop they share), `reconcile` repairs what they wrote,
//! `run` orchestrates them (and nothing below depends on it), `demo` holds
//! the generator and summary. Errors live in `error`, every metric in
//! `metrics`, readiness, its HTTP endpoints and retry in `health`; logs,
//! traces and trace context across Kafka and the outbox in `telemetry`.
//!
//! ```text
//! attempts ──ingest──▶ Postgres (+ outbox) ──relay──▶ mastery
//! concepts, prerequisites ──catalog──▶ Postgres
//! concepts, prerequisites, mastery ──graph──▶ Neo4j
//! evaluations ──audit──▶ Postgres (append-only log)
//! ```

pub mod config;
pub mod consumer;
pub mod demo;
pub mod error;
pub mod health;
pub mod metrics;
pub mod reconcile;
pub mod run;
pub mod telemetry;
pub mod workers;

pub use demo::{live, loadgen, summary};
pub use workers::{audit, catalog, changes, graph_sink, ingest, recompute, relay};

pub use config::Config;
pub use health::Health;
pub use metrics::Metrics;
pub use tokio_util::sync::CancellationToken;
