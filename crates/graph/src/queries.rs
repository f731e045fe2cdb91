//! Read queries: counts for summaries and the learner queries.

use neo4rs::query;

use crate::{GraphError, GraphStore};

/// Node and relationship counts by type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GraphCounts {
    /// `(label, count)` pairs, sorted.
    pub nodes: Vec<(String, i64)>,
    /// `(type, count)` pairs, sorted.
    pub relationships: Vec<(String, i64)>,
}

impl GraphCounts {
    /// Count of one node label (0 if absent).
    pub fn node(&self, label: &str) -> i64 {
        self.nodes
            .iter()
            .find(|(l, _)| l == label)
            .map_or(0, |(_, n)| *n)
    }

    /// Count of one relationship type (0 if absent).
    pub fn rel(&self, t: &str) -> i64 {
        self.relationships
            .iter()
            .find(|(l, _)| l == t)
            .map_or(0, |(_, n)| *n)
    }
}

/// A concept a student can learn next.
#[derive(Debug, Clone, PartialEq)]
pub struct NextConcept {
    /// Concept id.
    pub id: String,
    /// Name.
    pub name: String,
    /// The student's current score on it (0 if never attempted).
    pub score: f64,
    /// Prerequisites (all mastered).
    pub prerequisites: i64,
}

impl GraphStore {
    /// Node and relationship counts by label and type.
    pub async fn counts(&self) -> Result<GraphCounts, GraphError> {
        let mut out = GraphCounts::default();
        for label in ["Concept", "Domain", "User"] {
            let mut rows = self
                .graph
                .execute(query(&format!("MATCH (n:{label}) RETURN count(n) AS n")))
                .await?;
            if let Some(r) = rows.next().await? {
                out.nodes.push((label.to_owned(), r.get::<i64>("n")?));
            }
        }
        for t in ["MASTERED_BY", "PART_OF", "PREREQUISITE_OF"] {
            let mut rows = self
                .graph
                .execute(query(&format!("MATCH ()-[r:{t}]->() RETURN count(r) AS n")))
                .await?;
            if let Some(r) = rows.next().await? {
                out.relationships.push((t.to_owned(), r.get::<i64>("n")?));
            }
        }
        Ok(out)
    }

    /// `MASTERED_BY` edges of users whose id starts with `prefix`:
    /// (user, concept, score, version).
    pub async fn mastery_edges(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String, f64, i64)>, GraphError> {
        let mut rows = self
            .graph
            .execute(
                query(
                    "MATCH (u:User)-[r:MASTERED_BY]->(c:Concept) WHERE u.id STARTS WITH $p \
                     RETURN u.id AS u, c.id AS c, r.score AS s, r.version AS v ORDER BY u, c",
                )
                .param("p", prefix),
            )
            .await?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().await? {
            out.push((r.get("u")?, r.get("c")?, r.get("s")?, r.get("v")?));
        }
        Ok(out)
    }

    /// Concepts whose prerequisites the user has all mastered (score ≥
    /// `threshold`) and which the user has not mastered, easiest first.
    pub async fn next_concepts(
        &self,
        user: &str,
        threshold: f64,
        limit: i64,
    ) -> Result<Vec<NextConcept>, GraphError> {
        let q = query(
            "MATCH (c:Concept) WHERE c.name IS NOT NULL \
             OPTIONAL MATCH (:User {id: $user})-[own:MASTERED_BY]->(c) \
             WITH c, coalesce(own.score, 0.0) AS score WHERE score < $t \
             OPTIONAL MATCH (p:Concept)-[:PREREQUISITE_OF]->(c) \
             OPTIONAL MATCH (:User {id: $user})-[pm:MASTERED_BY]->(p) \
             WITH c, score, count(p) AS pres, count(CASE WHEN pm.score >= $t THEN 1 END) AS done \
             WHERE pres = done \
             RETURN c.id AS id, c.name AS name, score, pres ORDER BY pres DESC, score DESC, c.difficulty ASC, id LIMIT $limit",
        )
        .param("user", user)
        .param("t", threshold)
        .param("limit", limit);
        let mut rows = self.graph.execute(q).await?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().await? {
            out.push(NextConcept {
                id: r.get("id")?,
                name: r.get("name")?,
                score: r.get("score")?,
                prerequisites: r.get("pres")?,
            });
        }
        Ok(out)
    }
}

impl GraphStore {
    /// Ids of `:Concept` nodes whose id starts with `prefix`, sorted.
    pub async fn concept_ids(&self, prefix: &str) -> Result<Vec<String>, GraphError> {
        let mut rows = self
            .graph
            .execute(
                query("MATCH (c:Concept) WHERE c.id STARTS WITH $p RETURN c.id AS id ORDER BY id")
                    .param("p", prefix),
            )
            .await?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().await? {
            out.push(r.get("id")?);
        }
        Ok(out)
    }

    /// `PREREQUISITE_OF` edges between concepts whose ids start with
    /// `prefix`, as (prerequisite, concept), sorted.
    pub async fn prerequisite_links(
        &self,
        prefix: &str,
    ) -> Result<Vec<(String, String)>, GraphError> {
        let mut rows = self
            .graph
            .execute(
                query(
                    "MATCH (p:Concept)-[:PREREQUISITE_OF]->(c:Concept) WHERE c.id STARTS WITH $p \
                     RETURN p.id AS p, c.id AS c ORDER BY p, c",
                )
                .param("p", prefix),
            )
            .await?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().await? {
            out.push((r.get("p")?, r.get("c")?));
        }
        Ok(out)
    }
}
