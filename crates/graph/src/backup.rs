//! Logical backup of the graph as JSON lines, keyed by the domain ids (not
//! Neo4j's internal ids), so it restores into any Neo4j 5, empty or not,
//! with the same idempotent MERGEs the sink uses. Community edition has no
//! online `neo4j-admin backup`, and the compacted topics can rebuild the
//! graph anyway; this is the faster path back, and a snapshot to diff.

use std::collections::HashMap;

use neo4rs::{query, BoltType};
use serde::{Deserialize, Serialize};

use crate::{GraphError, GraphStore};

/// One line of a graph export. Domains and `PART_OF` edges follow from the
/// concepts' `domain` and are not written separately.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum GraphRecord {
    /// A concept node (`name` etc. absent for a placeholder).
    Concept {
        /// Id.
        id: String,
        /// Name.
        name: Option<String>,
        /// Domain.
        domain: Option<String>,
        /// Difficulty.
        difficulty: Option<f64>,
        /// Event time, ms.
        updated_at: Option<i64>,
    },
    /// A user node.
    User {
        /// Id.
        id: String,
    },
    /// `(from)-[:PREREQUISITE_OF]->(to)`.
    Prerequisite {
        /// The prerequisite.
        from: String,
        /// The concept that needs it.
        to: String,
    },
    /// `(user)-[:MASTERED_BY {score, version, updatedAt}]->(concept)`.
    Mastery {
        /// Student.
        user: String,
        /// Concept.
        concept: String,
        /// Score.
        score: f64,
        /// Version.
        version: i64,
        /// Event time, ms.
        updated_at: Option<i64>,
    },
}

/// Records written or read, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GraphCountsByKind {
    /// Concept nodes.
    pub concepts: u64,
    /// User nodes.
    pub users: u64,
    /// Prerequisite edges.
    pub prerequisites: u64,
    /// Mastery edges.
    pub mastery: u64,
}

impl GraphCountsByKind {
    fn add(&mut self, r: &GraphRecord) {
        match r {
            GraphRecord::Concept { .. } => self.concepts += 1,
            GraphRecord::User { .. } => self.users += 1,
            GraphRecord::Prerequisite { .. } => self.prerequisites += 1,
            GraphRecord::Mastery { .. } => self.mastery += 1,
        }
    }
}

type Row = HashMap<&'static str, BoltType>;

fn opt<T: Into<BoltType>>(v: Option<T>) -> BoltType {
    v.map_or(BoltType::Null(neo4rs::BoltNull), Into::into)
}

impl GraphStore {
    /// Every user id starting with `prefix`, in id order, paged.
    pub async fn user_ids(&self, prefix: &str) -> Result<Vec<String>, GraphError> {
        let mut out: Vec<String> = Vec::new();
        loop {
            let after = out.last().cloned().unwrap_or_default();
            let mut rows = self
                .graph
                .execute(
                    query(
                        "MATCH (u:User) WHERE u.id STARTS WITH $p AND u.id > $after \
                         RETURN u.id AS id ORDER BY u.id LIMIT $page",
                    )
                    .param("p", prefix)
                    .param("after", after.as_str())
                    .param("page", crate::snapshot::PAGE),
                )
                .await?;
            let before = out.len();
            while let Some(r) = rows.next().await? {
                out.push(r.get("id")?);
            }
            if out.len() - before < crate::snapshot::PAGE as usize {
                return Ok(out);
            }
        }
    }

    /// Deletes every user and concept whose id starts with `prefix` (not
    /// empty), with their edges, a page per transaction: test and benchmark
    /// clean-up, and the "empty graph" a restore starts from. Returns the
    /// nodes deleted.
    pub async fn delete_prefixed(&self, prefix: &str) -> Result<u64, GraphError> {
        assert!(!prefix.is_empty(), "delete_prefixed needs a prefix");
        let mut total = 0;
        for label in ["User", "Concept"] {
            loop {
                let mut rows = self
                    .graph
                    .execute(
                        query(&format!(
                            "MATCH (n:{label}) WHERE n.id STARTS WITH $p \
                             WITH n LIMIT 2000 DETACH DELETE n RETURN count(*) AS n"
                        ))
                        .param("p", prefix),
                    )
                    .await?;
                let mut n = 0_i64;
                while let Some(r) = rows.next().await? {
                    n = r.get("n")?;
                }
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
        }
        Ok(total)
    }

    /// Exports concepts, users, prerequisite and mastery edges whose ids
    /// start with `prefix`, in a deterministic order (so two exports of the
    /// same graph are byte-identical), to `sink`.
    pub async fn export<E>(
        &self,
        prefix: &str,
        mut sink: impl FnMut(&GraphRecord) -> Result<(), E>,
    ) -> Result<Result<GraphCountsByKind, E>, GraphError> {
        let mut n = GraphCountsByKind::default();
        let mut emit = |r: GraphRecord| {
            n.add(&r);
            sink(&r)
        };
        for c in self.concept_nodes(prefix).await? {
            if let Err(e) = emit(GraphRecord::Concept {
                id: c.id,
                name: c.name,
                domain: c.domain,
                difficulty: c.difficulty,
                updated_at: c.updated_at,
            }) {
                return Ok(Err(e));
            }
        }
        for id in self.user_ids(prefix).await? {
            if let Err(e) = emit(GraphRecord::User { id }) {
                return Ok(Err(e));
            }
        }
        for (from, to) in self.prerequisite_edges(prefix).await? {
            if let Err(e) = emit(GraphRecord::Prerequisite { from, to }) {
                return Ok(Err(e));
            }
        }
        let mut edges = self.mastery_edge_states(prefix).await?;
        edges.sort_by(|a, b| (&a.user, &a.concept).cmp(&(&b.user, &b.concept)));
        for e in edges {
            if let Err(e) = emit(GraphRecord::Mastery {
                user: e.user,
                concept: e.concept,
                score: e.score,
                version: e.version,
                updated_at: e.updated_at,
            }) {
                return Ok(Err(e));
            }
        }
        Ok(Ok(n))
    }

    /// Writes a batch of exported records in one transaction with
    /// idempotent MERGEs; a mastery edge already newer in the graph is kept.
    pub async fn import(&self, records: &[GraphRecord]) -> Result<GraphCountsByKind, GraphError> {
        let mut n = GraphCountsByKind::default();
        let (mut concepts, mut users, mut links, mut edges): (
            Vec<Row>,
            Vec<Row>,
            Vec<Row>,
            Vec<Row>,
        ) = Default::default();
        for r in records {
            n.add(r);
            match r {
                GraphRecord::Concept {
                    id,
                    name,
                    domain,
                    difficulty,
                    updated_at,
                } => concepts.push(HashMap::from([
                    ("id", BoltType::from(id.as_str())),
                    ("name", opt(name.as_deref())),
                    ("domain", opt(domain.as_deref())),
                    ("difficulty", opt(*difficulty)),
                    ("updated_at", opt(*updated_at)),
                ])),
                GraphRecord::User { id } => {
                    users.push(HashMap::from([("id", BoltType::from(id.as_str()))]))
                }
                GraphRecord::Prerequisite { from, to } => links.push(HashMap::from([
                    ("pre", BoltType::from(from.as_str())),
                    ("con", BoltType::from(to.as_str())),
                ])),
                GraphRecord::Mastery {
                    user,
                    concept,
                    score,
                    version,
                    updated_at,
                } => edges.push(HashMap::from([
                    ("user", BoltType::from(user.as_str())),
                    ("concept", BoltType::from(concept.as_str())),
                    ("score", BoltType::from(*score)),
                    ("version", BoltType::from(*version)),
                    ("updated_at", opt(*updated_at)),
                ])),
            }
        }
        let mut txn = self.graph.start_txn().await?;
        if !concepts.is_empty() {
            txn.run(
                query(
                    "UNWIND $rows AS row MERGE (c:Concept {id: row.id}) \
                     SET c.name = row.name, c.domain = row.domain, c.difficulty = row.difficulty, \
                     c.updatedAt = row.updated_at \
                     FOREACH (_ IN CASE WHEN row.domain IS NULL THEN [] ELSE [1] END | \
                       MERGE (d:Domain {name: row.domain}) MERGE (c)-[:PART_OF]->(d))",
                )
                .param("rows", concepts),
            )
            .await?;
        }
        if !users.is_empty() {
            txn.run(query("UNWIND $rows AS row MERGE (:User {id: row.id})").param("rows", users))
                .await?;
        }
        if !links.is_empty() {
            txn.run(
                query(
                    "UNWIND $rows AS row MERGE (p:Concept {id: row.pre}) MERGE (c:Concept {id: row.con}) \
                     MERGE (p)-[:PREREQUISITE_OF]->(c)",
                )
                .param("rows", links),
            )
            .await?;
        }
        if !edges.is_empty() {
            txn.run(query(crate::snapshot::REPAIR_MASTERY).param("rows", edges))
                .await?;
        }
        txn.commit().await?;
        Ok(n)
    }
}
