//! Neo4j, the derived graph: `(:Concept)-[:PART_OF]->(:Domain)`,
//! `(pre:Concept)-[:PREREQUISITE_OF]->(c:Concept)` and
//! `(:User)-[:MASTERED_BY {score, version, updatedAt}]->(:Concept)`.
//!
//! Every write is an idempotent, parameterised `UNWIND` over a batch that the
//! caller has coalesced per key, and mastery edges are version-guarded: an
//! older version never overwrites a newer one, so redelivery and reordering
//! are harmless.

mod backup;
mod queries;
mod snapshot;
mod writes;

pub use backup::{GraphCountsByKind, GraphRecord};
pub use queries::{
    learnable_order, GraphCounts, NextConcept, PathStep, WeakConcept, MAX_PATH_HOPS,
};
pub use snapshot::{ConceptNode, MasteryEdgeState};
pub use writes::{mastery_by_concept, GraphBatch, MasteryEdge};

use neo4rs::{query, Graph};

/// Graph errors, classed so workers know whether to retry.
#[derive(Debug, thiserror::Error)]
pub enum GraphError {
    /// Connecting or a statement failed.
    #[error("neo4j: {0}")]
    Neo4j(#[from] neo4rs::Error),
    /// A value in a row had an unexpected type.
    #[error("neo4j row: {0}")]
    Row(#[from] neo4rs::DeError),
}

impl GraphError {
    /// By the server's status code: a client error about the request itself
    /// (`Neo.ClientError.Statement.*`, `.Schema.*`, `.Request.*`: a
    /// constraint, a value it cannot store, a syntax error) will fail again,
    /// and so will a value we could not encode or decode. Everything else
    /// (connection loss, transient and database errors, security errors
    /// during a credential rotation, a database not yet available) is
    /// retried with backoff and reported as not-ready.
    pub fn is_retryable(&self) -> bool {
        use neo4rs::{Error as E, Neo4jClientErrorKind as C, Neo4jErrorKind as K};
        match self {
            GraphError::Neo4j(E::Neo4j(e)) => {
                !matches!(e.kind(), K::Client(C::Other | C::ProtocolViolation))
            }
            GraphError::Neo4j(
                E::StringTooLong
                | E::MapTooBig
                | E::BytesTooBig
                | E::ListTooLong
                | E::InvalidInteger(..)
                | E::IntegerOverflow(..)
                | E::ConversionError
                | E::DeserializationError(_)
                | E::UnknownType(_)
                | E::InvalidTypeMarker(_)
                | E::UnsupportedScheme(_)
                | E::UrlParseError(_)
                | E::InvalidConfig,
            ) => false,
            GraphError::Neo4j(_) => true,
            GraphError::Row(_) => false,
        }
    }

    /// A `Neo.TransientError.*`: the server aborted the transaction for a
    /// reason of the moment (it was chosen as a deadlock's victim, a lock
    /// wait timed out), so the same transaction run again may well commit.
    pub fn is_transient(&self) -> bool {
        matches!(self, GraphError::Neo4j(neo4rs::Error::Neo4j(e))
            if e.kind() == neo4rs::Neo4jErrorKind::Transient)
    }
}

/// Runs a write transaction again when Neo4j aborts it with a transient
/// error, as the official drivers' managed transactions do. Two writers of
/// the same edges (the graph sink and a repairing reconciliation, or two
/// sink instances during a rebalance) take locks in different orders, and
/// Neo4j then aborts one of them; every write in this crate is idempotent
/// (`MERGE`, version-guarded `SET`), so running it again is safe, and a
/// one-shot job like `reconcile` should not fail over it. Other errors, and
/// a transient one that persists past the last try, go to the caller.
async fn transient_retry<T, F, Fut>(op: &'static str, f: F) -> Result<T, GraphError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, GraphError>>,
{
    use backon::Retryable;
    let backoff = backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(50))
        .with_max_delay(std::time::Duration::from_secs(2))
        .with_max_times(TRANSIENT_RETRIES)
        .with_jitter();
    f.retry(backoff)
        .sleep(tokio::time::sleep)
        .when(GraphError::is_transient)
        .notify(|e, wait| {
            tracing::warn!(operation = op, error = %e, retry_in_ms = wait.as_millis() as u64,
                "neo4j aborted a write transaction, running it again");
        })
        .await
}

/// How often [`transient_retry`] runs a transaction again: with jittered
/// doubling from 50 ms to at most 2 s, about 8 s of trying in all.
const TRANSIENT_RETRIES: usize = 8;

/// A connection pool to one Neo4j database.
#[derive(Clone)]
pub struct GraphStore {
    graph: Graph,
}

impl std::fmt::Debug for GraphStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GraphStore")
    }
}

/// Constraints and indexes DESIGN.md asks for, each idempotent.
const SCHEMA: [&str; 4] = [
    "CREATE CONSTRAINT concept_id IF NOT EXISTS FOR (c:Concept) REQUIRE c.id IS UNIQUE",
    "CREATE CONSTRAINT user_id IF NOT EXISTS FOR (u:User) REQUIRE u.id IS UNIQUE",
    "CREATE CONSTRAINT domain_name IF NOT EXISTS FOR (d:Domain) REQUIRE d.name IS UNIQUE",
    "CREATE INDEX concept_name IF NOT EXISTS FOR (c:Concept) ON (c.name)",
];

impl GraphStore {
    /// Connects lazily (the pool dials on first use). The password is only
    /// passed to the driver, never logged.
    pub fn new(uri: &str, user: &str, password: &str) -> Result<Self, GraphError> {
        Self::connect(uri, user, password, None)
    }

    /// As [`GraphStore::new`], trusting the CA certificate in `ca_file`
    /// for a TLS URI (`bolt+s://`, `neo4j+s://`) whose server certificate
    /// no system CA signed. `+ssc` URIs skip verification altogether.
    pub fn connect(
        uri: &str,
        user: &str,
        password: &str,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self, GraphError> {
        // NB: two rustls crypto providers (ring, aws-lc-rs) are compiled in
        // through different dependencies, so rustls cannot choose one and a
        // TLS URI would panic on connect. Pick one for the process; a no-op
        // when one is already installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut b = neo4rs::ConfigBuilder::default()
            .uri(uri)
            .user(user)
            .password(password);
        if let Some(ca) = ca_file {
            b = b.with_client_certificate(ca);
        }
        Ok(Self {
            graph: Graph::connect(b.build()?)?,
        })
    }

    /// Creates constraints and indexes if missing.
    pub async fn ensure_schema(&self) -> Result<(), GraphError> {
        for s in SCHEMA {
            self.graph.run(query(s)).await?;
        }
        Ok(())
    }

    /// `RETURN 1`, for readiness.
    pub async fn ping(&self) -> Result<(), GraphError> {
        let mut rows = self.graph.execute(query("RETURN 1 AS ok")).await?;
        rows.next().await?;
        Ok(())
    }
}
