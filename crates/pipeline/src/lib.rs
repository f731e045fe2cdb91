//! The pipeline's workers, one module per consumer group, plus the outbox
//! relay, the all-in-one `run`, and the demo data generator.
//!
//! Files follow the data: `consumer` (polling, positioning, DLQ) feeds
//! `workers/*` (ingest, catalog, graph sink, relay, recompute, and the
//! change-stream loop they share), `reconcile` repairs what they wrote,
//! `run` orchestrates them (and nothing below depends on it), `demo` holds
//! the generator and summary. Errors live in `error`, metrics, readiness
//! and retry in `health`.
//!
//! ```text
//! attempts ──ingest──▶ Postgres (+ outbox) ──relay──▶ mastery
//! concepts, prerequisites ──catalog──▶ Postgres
//! concepts, prerequisites, mastery ──graph──▶ Neo4j
//! ```

pub mod config;
pub mod consumer;
pub mod demo;
pub mod error;
pub mod health;
pub mod reconcile;
pub mod run;
pub mod workers;

pub use demo::{loadgen, summary};
pub use workers::{catalog, changes, graph_sink, ingest, recompute, relay};

pub use config::Config;
pub use health::Health;
pub use tokio_util::sync::CancellationToken;
