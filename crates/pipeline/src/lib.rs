//! The pipeline's workers, one module per consumer group, plus the outbox
//! relay, the all-in-one `run`, and the demo data generator.
//!
//! ```text
//! attempts ──ingest──▶ Postgres (+ outbox) ──relay──▶ mastery
//! concepts, prerequisites ──catalog──▶ Postgres
//! concepts, prerequisites, mastery ──graph──▶ Neo4j
//! ```

pub mod catalog;
pub mod changes;
pub mod config;
pub mod consumer;
pub mod graph_sink;
pub mod health;
pub mod ingest;
pub mod loadgen;
pub mod recompute;
pub mod reconcile;
pub mod relay;
pub mod run;
pub mod summary;

pub use config::Config;
pub use health::Health;
pub use tokio_util::sync::CancellationToken;
