//! Batched, idempotent writes.

use std::collections::{BTreeMap, HashMap};

use neo4rs::{query, BoltType, Txn};
use novyra_core::{ConceptUpserted, MasteryUpdated, PrerequisiteLinked};
use tracing::Instrument;

use crate::{GraphError, GraphStore};

/// A `MASTERED_BY` edge to write.
pub type MasteryEdge = MasteryUpdated;

/// One coalesced batch: the newest state per key, in one transaction.
///
/// Keyed maps are ordered so that every writer takes Neo4j's locks in the
/// same order (by key), which makes deadlocks between two writers of
/// overlapping batches rarer; [`GraphStore::write`] retries the rest.
#[derive(Debug, Default, Clone)]
pub struct GraphBatch {
    /// Concepts to upsert, by id.
    pub concepts: BTreeMap<String, ConceptUpserted>,
    /// Concept ids to delete (with their edges).
    pub concept_deletes: Vec<String>,
    /// Links to make, by key.
    pub links: BTreeMap<(String, String), PrerequisiteLinked>,
    /// Links to remove.
    pub unlinks: Vec<(String, String)>,
    /// Mastery edges, newest version per (user, concept).
    pub mastery: BTreeMap<(String, String), MasteryUpdated>,
    /// Mastery edges to remove (tombstones).
    pub mastery_deletes: Vec<(String, String)>,
}

impl GraphBatch {
    /// Adds a concept; a later event for the same key replaces an earlier one.
    pub fn concept(&mut self, c: ConceptUpserted) {
        self.concept_deletes.retain(|id| *id != c.concept_id);
        self.concepts.insert(c.concept_id.clone(), c);
    }

    /// Adds a concept tombstone.
    pub fn concept_deleted(&mut self, id: String) {
        self.concepts.remove(&id);
        self.concept_deletes.push(id);
    }

    /// Adds a link.
    pub fn link(&mut self, l: PrerequisiteLinked) {
        let k = (l.prerequisite_id.clone(), l.concept_id.clone());
        self.unlinks.retain(|u| *u != k);
        self.links.insert(k, l);
    }

    /// Adds a link tombstone.
    pub fn unlink(&mut self, pre: String, con: String) {
        let k = (pre, con);
        self.links.remove(&k);
        self.unlinks.push(k);
    }

    /// Adds a mastery update, keeping only the highest version per key.
    pub fn mastery(&mut self, m: MasteryUpdated) {
        let k = (m.user_id.clone(), m.concept_id.clone());
        self.mastery_deletes.retain(|d| *d != k);
        match self.mastery.get(&k) {
            Some(old) if old.version >= m.version => {}
            _ => {
                self.mastery.insert(k, m);
            }
        }
    }

    /// Adds a mastery tombstone.
    pub fn mastery_deleted(&mut self, user: String, concept: String) {
        let k = (user, concept);
        self.mastery.remove(&k);
        self.mastery_deletes.push(k);
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.concepts.is_empty()
            && self.concept_deletes.is_empty()
            && self.links.is_empty()
            && self.unlinks.is_empty()
            && self.mastery.is_empty()
            && self.mastery_deletes.is_empty()
    }
}

pub(crate) type Row = HashMap<&'static str, BoltType>;

/// A concept as the `UNWIND` statements read it (the sink's upsert and
/// reconcile's guarded repair).
pub(crate) fn concept_row(c: &ConceptUpserted) -> Row {
    HashMap::from([
        ("id", BoltType::from(c.concept_id.as_str())),
        ("name", BoltType::from(c.name.as_str())),
        ("domain", BoltType::from(c.domain.as_str())),
        ("difficulty", BoltType::from(c.difficulty)),
        ("updated_at", BoltType::from(c.updated_at)),
    ])
}

fn pairs(v: &[(String, String)], a: &'static str, b: &'static str) -> Vec<Row> {
    v.iter()
        .map(|(x, y)| {
            HashMap::from([
                (a, BoltType::from(x.as_str())),
                (b, BoltType::from(y.as_str())),
            ])
        })
        .collect()
}

// A concept may arrive after mastery that references it; MERGE creates the
// node with its id and the concept event fills in the rest later.
const UPSERT_CONCEPTS: &str = "UNWIND $rows AS row \
    MERGE (c:Concept {id: row.id}) \
    SET c.name = row.name, c.difficulty = row.difficulty, c.domain = row.domain, c.updatedAt = row.updated_at \
    MERGE (d:Domain {name: row.domain}) \
    WITH c, d \
    OPTIONAL MATCH (c)-[old:PART_OF]->(other:Domain) WHERE other <> d \
    DELETE old \
    MERGE (c)-[:PART_OF]->(d)";
const DELETE_CONCEPTS: &str = "UNWIND $rows AS row MATCH (c:Concept {id: row.id}) DETACH DELETE c";
const LINK: &str = "UNWIND $rows AS row \
    MERGE (p:Concept {id: row.pre}) MERGE (c:Concept {id: row.con}) \
    MERGE (p)-[:PREREQUISITE_OF]->(c)";
const UNLINK: &str = "UNWIND $rows AS row \
    MATCH (:Concept {id: row.pre})-[r:PREREQUISITE_OF]->(:Concept {id: row.con}) DELETE r";
// Version guard: the SET only happens when the stored version is lower.
// The edge is write-locked (a property set and removed) before its version
// is read: Neo4j reads committed data without locks, so a guard read first
// could pass on a version another writer is replacing, and then overwrite
// that writer's newer edge once its lock is free (a lost update, found by
// the chaos test between the sink and a reconcile repair).
//
// The rows come grouped by concept, each concept merged once for all its
// students' edges: a batch touches few concepts (hundreds) and many
// students. Unguarded, alternating the two forms in one run, grouped went
// 2-28 % faster than a concept `MERGE` per row (docs/benchmarks.md).
const MASTERY: &str = "UNWIND $rows AS g \
    MERGE (c:Concept {id: g.concept}) \
    WITH c, g UNWIND g.edges AS row \
    MERGE (u:User {id: row.user}) \
    MERGE (u)-[r:MASTERED_BY]->(c) \
    SET r._lock = true REMOVE r._lock \
    WITH r, row WHERE r.version IS NULL OR r.version < row.version \
    SET r.score = row.score, r.version = row.version, r.updatedAt = row.updated_at";
const UNMASTER: &str = "UNWIND $rows AS row \
    MATCH (:User {id: row.user})-[r:MASTERED_BY]->(:Concept {id: row.concept}) DELETE r";

impl GraphStore {
    /// Writes a batch in one transaction: deletes, then concepts, links and
    /// mastery, so a batch that deletes and recreates ends recreated. A
    /// transaction Neo4j aborts as a deadlock's victim is run again.
    pub async fn write(&self, b: &GraphBatch) -> Result<(), GraphError> {
        if b.is_empty() {
            return Ok(());
        }
        crate::transient_retry("write", || self.write_once(b)).await
    }

    async fn write_once(&self, b: &GraphBatch) -> Result<(), GraphError> {
        let mut txn = self.graph.start_txn().await?;
        if !b.concept_deletes.is_empty() {
            let rows: Vec<Row> = b
                .concept_deletes
                .iter()
                .map(|id| HashMap::from([("id", BoltType::from(id.as_str()))]))
                .collect();
            statement(
                &mut txn,
                "delete_concepts",
                DELETE_CONCEPTS,
                rows,
                b.concept_deletes.len(),
            )
            .await?;
        }
        if !b.unlinks.is_empty() {
            statement(
                &mut txn,
                "unlink",
                UNLINK,
                pairs(&b.unlinks, "pre", "con"),
                b.unlinks.len(),
            )
            .await?;
        }
        if !b.mastery_deletes.is_empty() {
            let rows = pairs(&b.mastery_deletes, "user", "concept");
            statement(
                &mut txn,
                "unmaster",
                UNMASTER,
                rows,
                b.mastery_deletes.len(),
            )
            .await?;
        }
        if !b.concepts.is_empty() {
            let rows: Vec<Row> = b.concepts.values().map(concept_row).collect();
            statement(
                &mut txn,
                "upsert_concepts",
                UPSERT_CONCEPTS,
                rows,
                b.concepts.len(),
            )
            .await?;
        }
        if !b.links.is_empty() {
            let keys: Vec<(String, String)> = b.links.keys().cloned().collect();
            statement(
                &mut txn,
                "link",
                LINK,
                pairs(&keys, "pre", "con"),
                b.links.len(),
            )
            .await?;
        }
        if !b.mastery.is_empty() {
            let groups = mastery_by_concept(b.mastery.values());
            statement(&mut txn, "merge_mastery", MASTERY, groups, b.mastery.len()).await?;
        }
        txn.commit()
            .instrument(tracing::info_span!(
                "neo4j.commit",
                otel.name = "neo4j commit",
                otel.kind = "client",
                db.system.name = "neo4j",
            ))
            .await?;
        Ok(())
    }
}

/// The mastery edges as the sink's statement reads them: one row per
/// concept with its students' edges, concepts in id order and, given
/// edges in (student, concept) order, students in id order within each,
/// so every sink takes Neo4j's locks in the same order. Public so that
/// the bench's ceiling sends exactly the sink's parameters.
pub fn mastery_by_concept<'a>(
    mastery: impl IntoIterator<Item = &'a MasteryUpdated>,
) -> Vec<HashMap<&'static str, BoltType>> {
    let mut groups: BTreeMap<&str, Vec<Row>> = BTreeMap::new();
    for m in mastery {
        groups
            .entry(m.concept_id.as_str())
            .or_default()
            .push(HashMap::from([
                ("user", BoltType::from(m.user_id.as_str())),
                ("score", BoltType::from(m.mastery)),
                ("version", BoltType::from(m.version)),
                ("updated_at", BoltType::from(m.updated_at)),
            ]));
    }
    groups
        .into_iter()
        .map(|(concept, edges)| {
            HashMap::from([
                ("concept", BoltType::from(concept)),
                ("edges", BoltType::from(edges)),
            ])
        })
        .collect()
}

/// Runs one `UNWIND` statement of a batch in a span of its own: with
/// tracing on, each Cypher statement is a client span of the batch that
/// wrote it, with its text and the count of what it writes (`items`: a
/// grouped statement's rows are groups, not edges).
async fn statement(
    txn: &mut Txn,
    operation: &'static str,
    cypher: &'static str,
    rows: Vec<Row>,
    items: usize,
) -> Result<(), GraphError> {
    let span = tracing::info_span!(
        "neo4j.statement",
        otel.name = %format_args!("neo4j {operation}"),
        otel.kind = "client",
        db.system.name = "neo4j",
        db.operation.name = operation,
        db.query.text = cypher,
        novyra.rows = items,
    );
    txn.run(query(cypher).param("rows", rows))
        .instrument(span)
        .await?;
    Ok(())
}
