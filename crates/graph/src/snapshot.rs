//! Reading the whole graph back in pages (for reconciliation), and the
//! repair write that may overwrite an edge of the same version.

use std::collections::HashMap;

use neo4rs::{query, BoltType};

use crate::writes::{concept_row, Row};
use crate::{GraphError, GraphStore};

/// Rows per page when reading the graph back.
pub const PAGE: i64 = 20_000;

/// Mastery edges written by reconcile and by a restore: version-guarded
/// like the sink's write, but an edge of the *same* version is overwritten
/// too (its score was corrupted); a newer one never is. Locked before the
/// guard reads, like the sink's write (see `writes::MASTERY`).
pub(crate) const REPAIR_MASTERY: &str = "UNWIND $rows AS row \
    MERGE (u:User {id: row.user}) MERGE (c:Concept {id: row.concept}) \
    MERGE (u)-[r:MASTERED_BY]->(c) \
    SET r._lock = true REMOVE r._lock \
    WITH r, row WHERE r.version IS NULL OR r.version <= row.version \
    SET r.score = row.score, r.version = row.version, r.updatedAt = row.updated_at";

/// Concepts written by reconcile: like the sink's upsert, but a node whose
/// concept event is newer than the repair (the sink wrote it after the
/// reconcile's snapshot) is left alone, so a repair never rolls a concept
/// back. A node of the same time is overwritten (its fields were
/// corrupted); a placeholder (no time yet) is filled in. Locked before the
/// guard reads (see `writes::MASTERY`).
pub(crate) const REPAIR_CONCEPTS: &str = "UNWIND $rows AS row \
    MERGE (c:Concept {id: row.id}) \
    SET c._lock = true REMOVE c._lock \
    WITH c, row WHERE c.updatedAt IS NULL OR c.updatedAt <= row.updated_at \
    SET c.name = row.name, c.difficulty = row.difficulty, c.domain = row.domain, c.updatedAt = row.updated_at \
    MERGE (d:Domain {name: row.domain}) \
    WITH c, d \
    OPTIONAL MATCH (c)-[old:PART_OF]->(other:Domain) WHERE other <> d \
    DELETE old \
    MERGE (c)-[:PART_OF]->(d)";

/// A concept node as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct ConceptNode {
    /// Id.
    pub id: String,
    /// Name; `None` for a placeholder created by an early mastery edge.
    pub name: Option<String>,
    /// Domain.
    pub domain: Option<String>,
    /// Difficulty.
    pub difficulty: Option<f64>,
    /// The concept event's time (ms), if it has arrived.
    pub updated_at: Option<i64>,
}

/// A `MASTERED_BY` edge as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct MasteryEdgeState {
    /// Student.
    pub user: String,
    /// Concept.
    pub concept: String,
    /// Score.
    pub score: f64,
    /// Version.
    pub version: i64,
    /// The mastery event's time (ms).
    pub updated_at: Option<i64>,
}

impl GraphStore {
    /// Every concept whose id starts with `prefix` (empty: all), in id order.
    pub async fn concept_nodes(&self, prefix: &str) -> Result<Vec<ConceptNode>, GraphError> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let mut rows = self
                .graph
                .execute(
                    query(
                        "MATCH (c:Concept) WHERE c.id STARTS WITH $p AND c.id > $after \
                         RETURN c.id AS id, c.name AS name, c.domain AS domain, \
                         c.difficulty AS difficulty, c.updatedAt AS updated_at \
                         ORDER BY c.id LIMIT $page",
                    )
                    .param("p", prefix)
                    .param("after", after.as_str())
                    .param("page", PAGE),
                )
                .await?;
            let before = out.len();
            while let Some(r) = rows.next().await? {
                out.push(ConceptNode {
                    id: r.get("id")?,
                    name: r.get("name").ok(),
                    domain: r.get("domain").ok(),
                    difficulty: r.get("difficulty").ok(),
                    updated_at: r.get("updated_at").ok(),
                });
            }
            match out.last() {
                Some(last) if out.len() - before == PAGE as usize => after = last.id.clone(),
                _ => return Ok(out),
            }
        }
    }

    /// Every `PREREQUISITE_OF` edge into a concept whose id starts with
    /// `prefix`, as (prerequisite, concept), paged by the concept's id.
    pub async fn prerequisite_edges(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, GraphError> {
        let mut out = Vec::new();
        for c in self.concept_nodes(prefix).await?.chunks(PAGE as usize) {
            let ids: Vec<&str> = c.iter().map(|n| n.id.as_str()).collect();
            let mut rows = self
                .graph
                .execute(
                    query(
                        "MATCH (p:Concept)-[:PREREQUISITE_OF]->(c:Concept) WHERE c.id IN $ids \
                         RETURN p.id AS p, c.id AS c",
                    )
                    .param("ids", ids),
                )
                .await?;
            while let Some(r) = rows.next().await? {
                out.push((r.get("p")?, r.get("c")?));
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Every `MASTERED_BY` edge of users whose id starts with `prefix`,
    /// paged by user id.
    pub async fn mastery_edge_states(
        &self,
        prefix: &str,
    ) -> Result<Vec<MasteryEdgeState>, GraphError> {
        let mut out = Vec::new();
        let mut after = String::new();
        while let Some(last) = self.mastery_edge_page(prefix, &after, &mut out).await? {
            after = last;
        }
        Ok(out)
    }

    /// One page of [`GraphStore::mastery_edge_states`]: the edges of the
    /// next users (by id) after `after`, appended to `out`. Returns the last
    /// user read, to pass as the next `after`, or `None` past the end. Lets
    /// reconciliation stream a graph of any size through bounded memory.
    pub async fn mastery_edge_page(
        &self,
        prefix: &str,
        after: &str,
        out: &mut Vec<MasteryEdgeState>,
    ) -> Result<Option<String>, GraphError> {
        let mut users = self
            .graph
            .execute(
                query(
                    "MATCH (u:User) WHERE u.id STARTS WITH $p AND u.id > $after \
                     RETURN u.id AS id ORDER BY u.id LIMIT $page",
                )
                .param("p", prefix)
                .param("after", after)
                .param("page", PAGE / 20),
            )
            .await?;
        let mut ids: Vec<String> = Vec::new();
        while let Some(r) = users.next().await? {
            ids.push(r.get("id")?);
        }
        let Some(last) = ids.last().cloned() else {
            return Ok(None);
        };
        let mut rows = self
            .graph
            .execute(
                query(
                    "MATCH (u:User)-[r:MASTERED_BY]->(c:Concept) WHERE u.id IN $ids \
                     RETURN u.id AS u, c.id AS c, r.score AS s, r.version AS v, \
                     r.updatedAt AS t",
                )
                .param("ids", ids),
            )
            .await?;
        while let Some(r) = rows.next().await? {
            out.push(MasteryEdgeState {
                user: r.get("u")?,
                concept: r.get("c")?,
                score: r.get("s")?,
                version: r.get("v")?,
                updated_at: r.get("t").ok(),
            });
        }
        Ok(Some(last))
    }

    /// Writes concepts as reconciliation repairs them; see
    /// [`REPAIR_CONCEPTS`]. A deadlock's victim is run again.
    pub async fn repair_concepts(
        &self,
        concepts: &[novyra_core::ConceptUpserted],
    ) -> Result<(), GraphError> {
        if concepts.is_empty() {
            return Ok(());
        }
        let rows: Vec<Row> = concepts.iter().map(concept_row).collect();
        self.repair("repair_concepts", REPAIR_CONCEPTS, rows).await
    }

    /// Writes mastery edges as reconciliation repairs them: like the sink's
    /// version-guarded write, but an edge of the *same* version is
    /// overwritten too (its score was corrupted); a newer one never is.
    /// Like [`GraphStore::write`], a deadlock's victim is run again.
    pub async fn repair_mastery(
        &self,
        edges: &[(String, String, f64, i64, i64)],
    ) -> Result<(), GraphError> {
        if edges.is_empty() {
            return Ok(());
        }
        let rows: Vec<Row> = edges
            .iter()
            .map(|(u, c, score, version, at)| {
                HashMap::from([
                    ("user", BoltType::from(u.as_str())),
                    ("concept", BoltType::from(c.as_str())),
                    ("score", BoltType::from(*score)),
                    ("version", BoltType::from(*version)),
                    ("updated_at", BoltType::from(*at)),
                ])
            })
            .collect();
        self.repair("repair_mastery", REPAIR_MASTERY, rows).await
    }

    /// Runs one repair statement in its own transaction; a deadlock's
    /// victim is run again.
    async fn repair(
        &self,
        operation: &'static str,
        cypher: &'static str,
        rows: Vec<Row>,
    ) -> Result<(), GraphError> {
        crate::transient_retry(operation, || async {
            let mut txn = self.graph.start_txn().await?;
            txn.run(query(cypher).param("rows", rows.clone())).await?;
            txn.commit().await?;
            Ok(())
        })
        .await
    }
}
