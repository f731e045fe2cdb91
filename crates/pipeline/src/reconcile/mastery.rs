//! The mastery part of the diff, one bucket of users at a time: what the
//! graph's `MASTERED_BY` edges lack or hold too much of against the
//! mastery topic, and what the topic lacks against Postgres.

use std::collections::{HashMap, HashSet};

use novyra_core::MasteryUpdated;

/// A mastery edge as the topic wants it: user, concept, score, version,
/// event time (ms).
pub type WantEdge = (String, String, f64, i64, i64);

/// A mastery edge as the graph holds it: user, concept, score, version.
pub type GraphEdge = (String, String, f64, i64);

/// One bucket's drift and the writes that repair it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct BucketDiff {
    /// Edges on the topic, not in the graph.
    pub missing: u64,
    /// Edges with an older version or another score.
    pub stale: u64,
    /// Edges newer in the graph than the snapshot (left alone).
    pub newer: u64,
    /// Edges in the graph the topic does not explain, to delete.
    pub deletes: Vec<(String, String)>,
    /// Graph edges that go with a deleted concept (`DETACH DELETE`).
    pub cascaded: u64,
    /// Version-guarded repair writes, in key order (as the sink writes, so
    /// the two take locks alike).
    pub repairs: Vec<WantEdge>,
    /// Postgres rows the topic lacks or holds older, to republish.
    pub republish: Vec<MasteryUpdated>,
}

/// Diffs one bucket. `deleted` are the concepts the run deletes: their
/// edges go with them and are not counted as extra. `pending` are keys
/// still in the outbox, on their way to the topic, so not republished.
pub fn diff_bucket(
    want: Vec<WantEdge>,
    graph: Vec<GraphEdge>,
    postgres: Vec<MasteryUpdated>,
    pending: Vec<(String, String)>,
    deleted: &HashSet<String>,
) -> BucketDiff {
    let mut d = BucketDiff::default();
    let edges: HashMap<(String, String), (f64, i64)> = graph
        .into_iter()
        .map(|(u, c, s, v)| ((u, c), (s, v)))
        .collect();
    let want: HashMap<(String, String), (f64, i64, i64)> = want
        .into_iter()
        .map(|(u, c, s, v, at)| ((u, c), (s, v, at)))
        .collect();
    for (k, &(score, version, at)) in &want {
        match edges.get(k) {
            None => {
                d.missing += 1;
                d.repairs
                    .push((k.0.clone(), k.1.clone(), score, version, at));
            }
            Some(&(_, v)) if v > version => d.newer += 1,
            Some(&(s, v)) if v < version || s.to_bits() != score.to_bits() => {
                d.stale += 1;
                d.repairs
                    .push((k.0.clone(), k.1.clone(), score, version, at));
            }
            Some(_) => {}
        }
    }
    d.repairs.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    for k in edges.keys() {
        if deleted.contains(&k.1) {
            d.cascaded += 1;
        } else if !want.contains_key(k) {
            d.deletes.push(k.clone());
        }
    }
    d.deletes.sort();
    let pending: HashSet<(String, String)> = pending.into_iter().collect();
    for r in postgres {
        let k = (r.user_id, r.concept_id);
        if pending.contains(&k) {
            continue;
        }
        if want.get(&k).is_none_or(|e| e.1 < r.version) {
            let (user_id, concept_id) = k;
            d.republish.push(MasteryUpdated {
                user_id,
                concept_id,
                ..r
            });
        }
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(u: &str, c: &str, version: i64) -> MasteryUpdated {
        MasteryUpdated {
            user_id: u.into(),
            concept_id: c.into(),
            mastery: 0.5,
            version,
            attempts_total: version,
            attempts_correct: 0,
            confidence_weight: 0.0,
            last_event_id: "e".into(),
            updated_at: 7,
        }
    }

    fn w(u: &str, c: &str, s: f64, v: i64) -> WantEdge {
        (u.into(), c.into(), s, v, 7)
    }

    fn g(u: &str, c: &str, s: f64, v: i64) -> GraphEdge {
        (u.into(), c.into(), s, v)
    }

    #[test]
    fn each_kind_of_drift_is_counted_and_repaired_once() {
        let want = vec![
            w("u2", "a", 0.4, 2), // missing
            w("u1", "a", 0.4, 3), // stale: older in the graph
            w("u1", "b", 0.4, 3), // stale: same version, other score
            w("u1", "c", 0.4, 3), // newer in the graph: left alone
            w("u1", "d", 0.4, 3), // equal
        ];
        let graph = vec![
            g("u1", "a", 0.4, 2),
            g("u1", "b", 0.9, 3),
            g("u1", "c", 0.1, 4),
            g("u1", "d", 0.4, 3),
            g("u1", "x", 0.4, 1),    // extra
            g("u1", "gone", 0.4, 1), // goes with a deleted concept
        ];
        let postgres = vec![
            row("u1", "a", 3), // as on the topic
            row("u1", "d", 4), // newer than the topic: republished
            row("u3", "a", 1), // not on the topic: republished
            row("u3", "b", 1), // still in the outbox: left to the relay
        ];
        let pending = vec![("u3".to_owned(), "b".to_owned())];
        let deleted = HashSet::from(["gone".to_owned()]);
        let d = diff_bucket(want, graph, postgres, pending, &deleted);
        assert_eq!((d.missing, d.stale, d.newer, d.cascaded), (1, 2, 1, 1));
        assert_eq!(d.deletes, vec![("u1".to_owned(), "x".to_owned())]);
        let repaired: Vec<(&str, &str, i64)> = d
            .repairs
            .iter()
            .map(|r| (r.0.as_str(), r.1.as_str(), r.3))
            .collect();
        assert_eq!(
            repaired,
            vec![("u1", "a", 3), ("u1", "b", 3), ("u2", "a", 2)]
        );
        let republished: Vec<(&str, &str, i64)> = d
            .republish
            .iter()
            .map(|m| (m.user_id.as_str(), m.concept_id.as_str(), m.version))
            .collect();
        assert_eq!(republished, vec![("u1", "d", 4), ("u3", "a", 1)]);
    }
}
