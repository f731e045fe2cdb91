//! The relational mirror of the curriculum: concepts and prerequisite links.
//! Writes are idempotent upserts and deletes, so redelivery is harmless. A
//! change of a concept's effective BKT parameters queues the recomputation
//! of its mastery in the same transaction (see [`crate::recompute`]).

use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use novyra_core::{BktParams, ConceptUpserted, PrerequisiteLinked};

use crate::db::in_tx;
use crate::schema::{concept_prerequisites, concepts};
use crate::{ts, Store, StoreError};

/// One change from the compacted catalog topics, in topic order.
#[derive(Debug, Clone)]
pub enum CatalogChange {
    /// Concept created or changed.
    Concept(ConceptUpserted),
    /// Concept tombstone.
    ConceptDeleted(String),
    /// Link made.
    Link(PrerequisiteLinked),
    /// Link tombstone: (prerequisite_id, concept_id).
    Unlink(String, String),
}

impl Store {
    /// Applies changes in order, in one transaction.
    pub async fn apply_catalog(&self, changes: &[CatalogChange]) -> Result<(), StoreError> {
        in_tx!(self, |tx| {
            for ch in changes {
                match ch {
                    CatalogChange::Concept(x) => {
                        let p = BktParams::for_concept(x);
                        if current_params(tx, &x.concept_id).await?.unwrap_or_default() != p {
                            crate::recompute::enqueue(tx, &x.concept_id).await?;
                        }
                        diesel::insert_into(concepts::table)
                            .values((
                                concepts::id.eq(&x.concept_id),
                                concepts::name.eq(&x.name),
                                concepts::domain.eq(&x.domain),
                                concepts::difficulty.eq(x.difficulty),
                                concepts::bkt_p_init.eq(p.p_init),
                                concepts::bkt_p_transit.eq(p.p_transit),
                                concepts::bkt_p_slip.eq(p.p_slip),
                                concepts::bkt_p_guess.eq(p.p_guess),
                                concepts::source_updated_at.eq(ts(x.updated_at)),
                            ))
                            .on_conflict(concepts::id)
                            .do_update()
                            .set((
                                concepts::name.eq(excluded(concepts::name)),
                                concepts::domain.eq(excluded(concepts::domain)),
                                concepts::difficulty.eq(excluded(concepts::difficulty)),
                                concepts::bkt_p_init.eq(excluded(concepts::bkt_p_init)),
                                concepts::bkt_p_transit.eq(excluded(concepts::bkt_p_transit)),
                                concepts::bkt_p_slip.eq(excluded(concepts::bkt_p_slip)),
                                concepts::bkt_p_guess.eq(excluded(concepts::bkt_p_guess)),
                                concepts::source_updated_at
                                    .eq(excluded(concepts::source_updated_at)),
                                concepts::updated_at.eq(diesel::dsl::now),
                            ))
                            .execute(tx)
                            .await?;
                    }
                    CatalogChange::ConceptDeleted(id) => {
                        // NB: no recomputation: the graph drops the concept
                        // with its edges, and republishing its mastery rows
                        // would bring the node back. Its rows keep their
                        // last values (README, decisions).
                        diesel::delete(concepts::table.filter(concepts::id.eq(id)))
                            .execute(tx)
                            .await?;
                        diesel::delete(
                            concept_prerequisites::table.filter(
                                concept_prerequisites::concept_id
                                    .eq(id)
                                    .or(concept_prerequisites::prerequisite_id.eq(id)),
                            ),
                        )
                        .execute(tx)
                        .await?;
                    }
                    CatalogChange::Link(l) => {
                        diesel::insert_into(concept_prerequisites::table)
                            .values((
                                concept_prerequisites::prerequisite_id.eq(&l.prerequisite_id),
                                concept_prerequisites::concept_id.eq(&l.concept_id),
                                concept_prerequisites::linked_at.eq(ts(l.linked_at)),
                            ))
                            .on_conflict((
                                concept_prerequisites::prerequisite_id,
                                concept_prerequisites::concept_id,
                            ))
                            .do_update()
                            .set(
                                concept_prerequisites::linked_at
                                    .eq(excluded(concept_prerequisites::linked_at)),
                            )
                            .execute(tx)
                            .await?;
                    }
                    CatalogChange::Unlink(pre, con) => {
                        diesel::delete(
                            concept_prerequisites::table
                                .filter(concept_prerequisites::prerequisite_id.eq(pre))
                                .filter(concept_prerequisites::concept_id.eq(con)),
                        )
                        .execute(tx)
                        .await?;
                    }
                }
            }
            Ok(())
        })
    }
}

/// The stored parameters of a concept, locked until the transaction ends
/// (`None`: the catalog does not know it, so its attempts use the defaults).
pub async fn current_params(
    tx: &mut AsyncPgConnection,
    id: &str,
) -> Result<Option<BktParams>, StoreError> {
    let row: Option<(f64, f64, f64, f64)> = concepts::table
        .filter(concepts::id.eq(id))
        .select((
            concepts::bkt_p_init,
            concepts::bkt_p_transit,
            concepts::bkt_p_slip,
            concepts::bkt_p_guess,
        ))
        .for_update()
        .first(tx)
        .await
        .optional()?;
    Ok(row.map(|(p_init, p_transit, p_slip, p_guess)| BktParams {
        p_init,
        p_transit,
        p_slip,
        p_guess,
    }))
}
