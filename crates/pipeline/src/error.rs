//! Why a worker stops: one error type for every worker, defined apart from
//! the orchestrator (`run`) so that the workers never depend on it.

/// Why a worker stopped.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// Kafka failed.
    #[error(transparent)]
    Kafka(#[from] novyra_kafka::rdkafka::error::KafkaError),
    /// Kafka admin failed.
    #[error(transparent)]
    KafkaAdmin(#[from] novyra_kafka::KafkaError),
    /// Postgres failed for good.
    #[error(transparent)]
    Store(#[from] novyra_store::StoreError),
    /// Neo4j failed for good.
    #[error(transparent)]
    Graph(#[from] novyra_graph::GraphError),
    /// The registry could not be reached, refused a schema, or its client
    /// could not be built.
    #[error(transparent)]
    Registry(#[from] novyra_registry::EncodeError),
    /// Shut down while a dependency was being retried.
    #[error("shut down while waiting for a dependency")]
    Shutdown,
    /// Generated data could not be published (the demo).
    #[error(transparent)]
    Publish(#[from] crate::loadgen::PublishError),
    /// A task panicked.
    #[error("worker task failed: {0}")]
    Join(String),
    /// The thread polling Kafka for the worker ended unexpectedly (see its
    /// log line just before).
    #[error("the kafka poll thread stopped")]
    PollThread,
    /// A job that deletes or republishes could not see the whole truth (a
    /// record it cannot read, a topic read that stopped short), so it
    /// wrote nothing.
    #[error("incomplete view, nothing written: {0}")]
    Incomplete(String),
    /// Reconciliation failed in its repair pass, where some repairs may
    /// already be written. Unlike every failure before that pass, it may
    /// have written: an operator told "nothing written" would wrongly trust
    /// the graph to be as it was. What was written stays (each repair is guarded, so none
    /// rolls back a newer write) and the next run finishes the rest.
    #[error("reconciliation failed during its repairs; any written before the failure stay (each is guarded) and a rerun finishes the rest: {0}")]
    RepairInterrupted(Box<WorkerError>),
    /// Reconciliation could not spill to (or read back from) its
    /// temporary files: a full disk or a missing `TMPDIR`.
    #[error(transparent)]
    Spill(#[from] crate::reconcile::spill::SpillError),
}
