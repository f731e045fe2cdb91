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

/// One step on a learning path: a prerequisite (or the target) the student
/// has not mastered yet.
#[derive(Debug, Clone, PartialEq)]
pub struct PathStep {
    /// Concept id.
    pub id: String,
    /// Name (empty if the concept has not arrived yet).
    pub name: String,
    /// The student's current score (0 if never attempted).
    pub score: f64,
    /// Fewest prerequisite hops from this concept to the target (0: the target).
    pub hops: i64,
}

/// An attempted concept the student is weak at that other concepts depend on.
#[derive(Debug, Clone, PartialEq)]
pub struct WeakConcept {
    /// Concept id.
    pub id: String,
    /// Name.
    pub name: String,
    /// The student's score (below the mastery threshold).
    pub score: f64,
    /// Concepts that list it as a prerequisite.
    pub dependents: i64,
    /// Of those, how many the student has already attempted: the higher,
    /// the more this gap is holding the student back right now.
    pub attempted_dependents: i64,
}

/// Longest prerequisite chain `path` follows; bounds the traversal.
pub const MAX_PATH_HOPS: u32 = 32;

impl GraphStore {
    /// What `user` still has to learn to reach `target`: the prerequisite
    /// closure of `target` up to `max_hops` hops (capped at
    /// [`MAX_PATH_HOPS`]), minus what the user has mastered (score ≥
    /// `threshold`), plus the target itself unless mastered, in an order in
    /// which each concept comes after all of its listed prerequisites.
    pub async fn learning_path(
        &self,
        user: &str,
        target: &str,
        threshold: f64,
        max_hops: u32,
    ) -> Result<Vec<PathStep>, GraphError> {
        let hops = max_hops.clamp(1, MAX_PATH_HOPS);
        // NB: a variable-length bound cannot be a parameter in Cypher; it is
        // a clamped integer, formatted in.
        let q = query(&format!(
            "MATCH (t:Concept {{id: $target}}) \
             OPTIONAL MATCH p = (pre:Concept)-[:PREREQUISITE_OF*1..{hops}]->(t) \
             WITH t, pre, min(length(p)) AS hops \
             WITH t, collect({{c: pre, hops: hops}}) AS pres \
             UNWIND pres + [{{c: t, hops: 0}}] AS x \
             WITH x.c AS c, x.hops AS hops WHERE c IS NOT NULL \
             OPTIONAL MATCH (:User {{id: $user}})-[m:MASTERED_BY]->(c) \
             WITH c, hops, coalesce(m.score, 0.0) AS score WHERE score < $t \
             RETURN c.id AS id, coalesce(c.name, '') AS name, score, hops"
        ))
        .param("target", target)
        .param("user", user)
        .param("t", threshold);
        let mut rows = self.graph.execute(q).await?;
        let mut steps = Vec::new();
        while let Some(r) = rows.next().await? {
            steps.push(PathStep {
                id: r.get("id")?,
                name: r.get("name")?,
                score: r.get("score")?,
                hops: r.get("hops")?,
            });
        }
        if steps.is_empty() {
            return Ok(steps);
        }
        let ids: Vec<String> = steps.iter().map(|s| s.id.clone()).collect();
        let mut rows = self
            .graph
            .execute(
                query(
                    "MATCH (p:Concept)-[:PREREQUISITE_OF]->(c:Concept) \
                     WHERE p.id IN $ids AND c.id IN $ids RETURN p.id AS p, c.id AS c",
                )
                .param("ids", ids),
            )
            .await?;
        let mut edges = Vec::new();
        while let Some(r) = rows.next().await? {
            edges.push((r.get::<String>("p")?, r.get::<String>("c")?));
        }
        Ok(learnable_order(steps, &edges))
    }

    /// Concepts `user` attempted but has not mastered (score < `threshold`)
    /// that are prerequisites of other concepts, the ones blocking attempted
    /// dependents first.
    pub async fn weak_concepts(
        &self,
        user: &str,
        threshold: f64,
        limit: i64,
    ) -> Result<Vec<WeakConcept>, GraphError> {
        let q = query(
            "MATCH (u:User {id: $user})-[m:MASTERED_BY]->(c:Concept) WHERE m.score < $t \
             MATCH (c)-[:PREREQUISITE_OF]->(d:Concept) \
             OPTIONAL MATCH (u)-[dm:MASTERED_BY]->(d) \
             WITH c, m, count(DISTINCT d) AS dependents, \
                  count(DISTINCT CASE WHEN dm IS NOT NULL THEN d END) AS attempted \
             RETURN c.id AS id, coalesce(c.name, '') AS name, m.score AS score, dependents, attempted \
             ORDER BY attempted DESC, dependents DESC, score ASC, id LIMIT $limit",
        )
        .param("user", user)
        .param("t", threshold)
        .param("limit", limit);
        let mut rows = self.graph.execute(q).await?;
        let mut out = Vec::new();
        while let Some(r) = rows.next().await? {
            out.push(WeakConcept {
                id: r.get("id")?,
                name: r.get("name")?,
                score: r.get("score")?,
                dependents: r.get("dependents")?,
                attempted_dependents: r.get("attempted")?,
            });
        }
        Ok(out)
    }
}

/// Orders `steps` so every concept follows its prerequisites among them
/// (Kahn's algorithm); ties go to the farther-from-target, then by id, so
/// the order is deterministic. Cycles (a corrupt catalog) are appended in
/// the same tie order rather than dropped.
pub fn learnable_order(steps: Vec<PathStep>, edges: &[(String, String)]) -> Vec<PathStep> {
    use std::collections::{BTreeMap, BTreeSet};
    let key = |s: &PathStep| (-s.hops, s.id.clone());
    let mut by_id: BTreeMap<String, PathStep> =
        steps.into_iter().map(|s| (s.id.clone(), s)).collect();
    let mut indegree: BTreeMap<String, usize> = by_id.keys().map(|k| (k.clone(), 0)).collect();
    for (p, c) in edges {
        if by_id.contains_key(p) {
            if let Some(d) = indegree.get_mut(c) {
                *d += 1;
            }
        }
    }
    let mut ready: BTreeSet<(i64, String)> = by_id
        .values()
        .filter(|s| indegree.get(&s.id) == Some(&0))
        .map(key)
        .collect();
    let mut out = Vec::with_capacity(by_id.len());
    while let Some(next) = ready.pop_first() {
        let Some(step) = by_id.remove(&next.1) else {
            continue;
        };
        for (p, c) in edges {
            if *p == step.id {
                if let Some(d) = indegree.get_mut(c) {
                    *d = d.saturating_sub(1);
                    if *d == 0 {
                        if let Some(s) = by_id.get(c) {
                            ready.insert(key(s));
                        }
                    }
                }
            }
        }
        out.push(step);
    }
    let mut rest: Vec<PathStep> = by_id.into_values().collect();
    rest.sort_by_key(key);
    out.extend(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(id: &str, hops: i64) -> PathStep {
        PathStep {
            id: id.into(),
            name: String::new(),
            score: 0.0,
            hops,
        }
    }

    #[test]
    fn learnable_order_puts_prerequisites_first() {
        // a -> b -> d -> e, a -> c -> d, and a shortcut c -> e.
        let edges: Vec<(String, String)> = [
            ("a", "b"),
            ("b", "d"),
            ("a", "c"),
            ("c", "d"),
            ("d", "e"),
            ("c", "e"),
        ]
        .iter()
        .map(|(p, c)| ((*p).to_owned(), (*c).to_owned()))
        .collect();
        let steps = vec![
            step("e", 0),
            step("c", 1),
            step("d", 1),
            step("b", 2),
            step("a", 2),
        ];
        let ids: Vec<String> = learnable_order(steps, &edges)
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(ids, ["a", "b", "c", "d", "e"]);
    }
}
