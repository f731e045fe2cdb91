//! One module per consumer group, plus the outbox relay and the mastery
//! recomputation that run beside them.

pub mod audit;
pub mod catalog;
pub mod changes;
pub mod graph_sink;
pub mod ingest;
pub mod recompute;
pub mod relay;
