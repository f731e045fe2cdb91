//! The `novyra-graph` group: concepts, prerequisites and mastery → Neo4j,
//! one coalesced `UNWIND` transaction per batch; offsets stored only after
//! the Neo4j commit.

use std::future::Future;

use novyra_graph::{GraphBatch, GraphError, GraphStore};
use tokio_util::sync::CancellationToken;

use crate::changes::{consume, Change, ChangeSink};
use crate::error::WorkerError;
use crate::health::retry;
use crate::{Config, Health};
use novyra_core::Group;

/// Consumer group suffix: the group is `<prefix>-graph` (`novyra-graph`).
pub const GROUP: &str = Group::Graph.suffix();

struct GraphSink(GraphStore);

impl ChangeSink for GraphSink {
    type Batch = GraphBatch;
    type Error = GraphError;
    const DEPENDENCY: &'static str = "neo4j";
    const MEASURES_FRESHNESS: bool = true;

    fn prepare(&self, changes: Vec<Change>) -> GraphBatch {
        let mut batch = GraphBatch::default();
        for c in changes {
            match c {
                Change::Concept(c) => batch.concept(c),
                Change::ConceptDeleted(id) => batch.concept_deleted(id),
                Change::Link(l) => batch.link(l),
                Change::Unlink(a, b) => batch.unlink(a, b),
                Change::Mastery(x) => batch.mastery(x),
                Change::MasteryDeleted(u, c) => batch.mastery_deleted(u, c),
                Change::Evaluation(_) => {}
            }
        }
        batch
    }

    fn write<'a>(
        &'a self,
        batch: &'a GraphBatch,
    ) -> impl Future<Output = Result<(), GraphError>> + Send + 'a {
        self.0.write(batch)
    }

    fn retryable(e: &GraphError) -> bool {
        e.is_retryable()
    }
}

/// Runs the graph sink until `stop`.
pub async fn run(
    cfg: &Config,
    health: &Health,
    stop: CancellationToken,
) -> Result<(), WorkerError> {
    let graph = cfg.graph()?;
    retry(health, "neo4j", &stop, GraphError::is_retryable, || {
        graph.ensure_schema()
    })
    .await?;
    let topics = cfg.topics(Group::Graph);
    consume(cfg, health, stop, GROUP, &topics, &GraphSink(graph)).await
}
