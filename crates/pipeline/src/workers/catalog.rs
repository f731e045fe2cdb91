//! The `novyra-catalog` group: concepts and prerequisites → Postgres.

use std::future::Future;

use novyra_store::catalog::CatalogChange;
use novyra_store::{Store, StoreError};
use tokio_util::sync::CancellationToken;

use crate::changes::{consume, Change, ChangeSink};
use crate::error::WorkerError;
use crate::{Config, Health};
use novyra_core::Group;

/// Consumer group suffix: the group is `<prefix>-catalog` (`novyra-catalog`).
pub const GROUP: &str = Group::Catalog.suffix();

struct CatalogSink(Store);

impl ChangeSink for CatalogSink {
    type Batch = Vec<CatalogChange>;
    type Error = StoreError;
    const DEPENDENCY: &'static str = "postgres";

    fn prepare(&self, changes: Vec<Change>) -> Self::Batch {
        changes
            .into_iter()
            .filter_map(|c| match c {
                Change::Concept(c) => Some(CatalogChange::Concept(c)),
                Change::ConceptDeleted(id) => Some(CatalogChange::ConceptDeleted(id)),
                Change::Link(l) => Some(CatalogChange::Link(l)),
                Change::Unlink(a, b) => Some(CatalogChange::Unlink(a, b)),
                Change::Mastery(_) | Change::MasteryDeleted(..) | Change::Evaluation(_) => None,
            })
            .collect()
    }

    fn write<'a>(
        &'a self,
        batch: &'a Self::Batch,
    ) -> impl Future<Output = Result<(), StoreError>> + Send + 'a {
        self.0.apply_catalog(batch)
    }

    fn retryable(e: &StoreError) -> bool {
        e.is_retryable()
    }
}

/// Runs the catalog worker until `stop`.
pub async fn run(
    cfg: &Config,
    health: &Health,
    stop: CancellationToken,
) -> Result<(), WorkerError> {
    let sink = CatalogSink(Store::new(&cfg.store())?);
    let topics = cfg.topics(Group::Catalog);
    consume(cfg, health, stop, GROUP, &topics, &sink).await
}
