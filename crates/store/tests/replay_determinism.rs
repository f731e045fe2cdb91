//! The law of DESIGN.md, as a property of the production code: the ingest's
//! batch planner (`plan_batch`) and the recomputation (`replace_states`)
//! together leave every (user, concept) with the values of a plain replay of
//! its distinct attempts, in order, with the concept's *final* parameters —
//! whatever the batching, the interleaving of users, re-published
//! duplicates, and when concepts arrive or change relative to the attempts
//! and their recomputation runs. No database is involved: the store's rows
//! are a map here, and only the pure functions the transactions call are
//! exercised.

use std::collections::{BTreeMap, HashMap, HashSet};

use novyra_core::{BktParams, ConceptAttempted, MasteryState};
use novyra_store::attempts::{plan_batch, IngestRecord, MasteryRow};
use novyra_store::recompute::replace_states;
use proptest::prelude::*;

type Key = (String, String);

/// What the test's stand-in tables hold.
#[derive(Default)]
struct Tables {
    claimed: HashSet<String>,
    mastery: HashMap<Key, MasteryState>,
    /// concept_attempts: (key, version it produced, attempt).
    attempts: Vec<(Key, i64, ConceptAttempted)>,
    catalogue: HashMap<String, BktParams>,
}

impl Tables {
    /// One ingest transaction, as `apply_batch` runs it.
    fn ingest(&mut self, batch: &[IngestRecord]) {
        let fresh: HashSet<String> = batch
            .iter()
            .map(|r| r.attempt.event_id.clone())
            .filter(|id| !self.claimed.contains(id))
            .collect();
        self.claimed.extend(fresh.iter().cloned());
        let states = batch
            .iter()
            .map(|r| (r.attempt.user_id.clone(), r.attempt.concept_id.clone()))
            .filter_map(|k| self.mastery.get(&k).cloned().map(|s| (k, s)))
            .collect();
        let plan = plan_batch(batch, &fresh, &self.catalogue, states);
        // Attempt rows, with the version each one produced (what the
        // planner wrote in `mastery_version`), recomputed here from the
        // stored row the planner started from.
        let mut version: HashMap<Key, i64> = HashMap::new();
        let mut since: HashMap<Key, i64> = HashMap::new();
        let mut seen = HashSet::new();
        for r in batch {
            let a = &r.attempt;
            if fresh.contains(&a.event_id) && seen.insert(a.event_id.clone()) {
                let k = (a.user_id.clone(), a.concept_id.clone());
                if let Some(t) = r.kafka_ts {
                    let oldest = since.entry(k.clone()).or_insert(t);
                    *oldest = (*oldest).min(t);
                }
                let v = version
                    .entry(k.clone())
                    .or_insert_with(|| self.mastery.get(&k).map_or(0, |s| s.version));
                *v += 1;
                self.attempts.push((k, *v, a.clone()));
            }
        }
        assert_eq!(plan.mastery.len(), plan.mastery_since.len());
        for (row, from) in plan.mastery.into_iter().zip(plan.mastery_since) {
            let k = (row.user_id.clone(), row.concept_id.clone());
            assert_eq!(row.version, version[&k], "the planner's version");
            assert_eq!(
                from.map(|t| t.timestamp_millis()),
                since.get(&k).copied(),
                "freshness is measured from the pair's oldest new attempt"
            );
            self.mastery.insert(k, row.state());
        }
    }

    /// One whole recomputation of `concept`, as `recompute_step` runs it.
    fn recompute(&mut self, concept: &str) {
        let params = self.catalogue.get(concept).copied().unwrap_or_default();
        let mut rows: Vec<MasteryRow> = self
            .mastery
            .iter()
            .filter(|(k, _)| k.1 == concept)
            .map(|(k, s)| MasteryRow::from_state(&k.0, &k.1, s))
            .collect();
        rows.sort_by(|a, b| a.user_id.cmp(&b.user_id));
        let mut ordered: Vec<&(Key, i64, ConceptAttempted)> = self
            .attempts
            .iter()
            .filter(|(k, _, _)| k.1 == concept)
            .collect();
        ordered.sort_by(|a, b| (&a.0 .0, a.1).cmp(&(&b.0 .0, b.1)));
        let mut by_user: BTreeMap<String, Vec<ConceptAttempted>> = BTreeMap::new();
        for (k, _, a) in ordered {
            by_user.entry(k.0.clone()).or_default().push(a.clone());
        }
        for row in replace_states(&rows, concept, &params, &by_user) {
            let k = (row.user_id.clone(), row.concept_id.clone());
            assert!(row.version > self.mastery[&k].version, "versions only grow");
            self.mastery.insert(k, row.state());
        }
    }
}

fn attempt(i: usize, user: u8, concept: u8, correct: bool, hints: u8) -> ConceptAttempted {
    ConceptAttempted {
        event_id: format!("e{i}"),
        user_id: format!("u{user}"),
        concept_id: format!("c{concept}"),
        occurred_at: 1_700_000_000_000 + i as i64,
        correct,
        hints_used: i32::from(hints),
        duration_ms: 1000,
        rubric: None,
    }
}

fn record(i: usize, a: &ConceptAttempted) -> IngestRecord {
    IngestRecord {
        partition: 0,
        offset: i as i64,
        schema_id: 1,
        // Out of order, and missing on every fifth, so "the oldest" is
        // neither the first nor the last attempt of a pair.
        kafka_ts: (!i.is_multiple_of(5)).then(|| 1_800_000_000_000 + ((i * 7919) % 1000) as i64),
        attempt: a.clone(),
    }
}

/// Parameter sets a concept may be given.
fn params(k: u8) -> BktParams {
    BktParams::from_difficulty(f64::from(k) / 3.0)
}

/// The reference: each pair's distinct attempts, in order, from the final
/// parameters' prior.
fn reference(
    attempts: &[&ConceptAttempted],
    catalogue: &HashMap<String, BktParams>,
) -> BTreeMap<Key, MasteryState> {
    let mut seen = HashSet::new();
    let mut out: BTreeMap<Key, MasteryState> = BTreeMap::new();
    for a in attempts {
        if !seen.insert(a.event_id.clone()) {
            continue;
        }
        let p = catalogue.get(&a.concept_id).copied().unwrap_or_default();
        out.entry((a.user_id.clone(), a.concept_id.clone()))
            .or_insert_with(|| MasteryState::initial(&p))
            .apply(a, &p);
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn mastery_equals_a_replay_with_the_final_catalogue(
        raw in prop::collection::vec((0u8..4, 0u8..3, any::<bool>(), 0u8..3), 1..150),
        // Re-published duplicates: indexes of attempts sent again later.
        dups in prop::collection::vec(any::<prop::sample::Index>(), 0..20),
        // Catalogue changes: (position in the stream, concept, parameter set),
        // each recomputed after a further delay (in batches).
        changes in prop::collection::vec(
            (any::<prop::sample::Index>(), 0u8..3, 0u8..4, 0usize..4), 0..6),
        shuffle_seed in any::<u64>(),
        batch in 1usize..40,
    ) {
        let mut attempts: Vec<ConceptAttempted> =
            raw.iter().enumerate().map(|(i, &(u, c, ok, h))| attempt(i, u, c, ok, h)).collect();
        for d in &dups {
            let again = attempts[d.index(raw.len())].clone();
            attempts.push(again);
        }

        // Interleave users differently while keeping each user's own order
        // (what partitioning by user id guarantees).
        let mut queues: BTreeMap<String, std::collections::VecDeque<&ConceptAttempted>> =
            BTreeMap::new();
        for a in &attempts {
            queues.entry(a.user_id.clone()).or_default().push_back(a);
        }
        let mut state = shuffle_seed;
        let mut stream: Vec<&ConceptAttempted> = Vec::with_capacity(attempts.len());
        while stream.len() < attempts.len() {
            let users: Vec<String> =
                queues.iter().filter(|(_, q)| !q.is_empty()).map(|(u, _)| u.clone()).collect();
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let u = &users[(state >> 33) as usize % users.len()];
            if let Some(a) = queues.get_mut(u).and_then(|q| q.pop_front()) {
                stream.push(a);
            }
        }

        // The live run: batches, with catalogue changes between them and
        // their recomputations some batches later.
        let records: Vec<IngestRecord> =
            stream.iter().enumerate().map(|(i, a)| record(i, a)).collect();
        let chunks: Vec<&[IngestRecord]> = records.chunks(batch).collect();
        let mut at: BTreeMap<usize, Vec<(String, BktParams, usize)>> = BTreeMap::new();
        for (pos, c, k, delay) in &changes {
            at.entry(pos.index(chunks.len() + 1))
                .or_default()
                .push((format!("c{c}"), params(*k), *delay));
        }
        let mut t = Tables::default();
        let mut due: BTreeMap<usize, Vec<String>> = BTreeMap::new();
        for step in 0..=chunks.len() {
            for (concept, p, delay) in at.remove(&step).unwrap_or_default() {
                t.catalogue.insert(concept.clone(), p);
                due.entry(step + delay).or_default().push(concept);
            }
            for concept in due.remove(&step).unwrap_or_default() {
                t.recompute(&concept);
            }
            if let Some(chunk) = chunks.get(step) {
                t.ingest(chunk);
            }
        }
        // Recomputations still queued when the stream ends run then.
        for concept in due.into_values().flatten() {
            t.recompute(&concept);
        }

        let want = reference(&stream, &t.catalogue);
        prop_assert_eq!(want.len(), t.mastery.len());
        for (k, w) in &want {
            let got = &t.mastery[k];
            prop_assert!(
                w.same_values(got),
                "{:?}: replay {:?} vs pipeline {:?}", k, w, got
            );
            prop_assert!(got.version >= got.attempts_total);
        }
        // And the order of users in the stream does not matter either.
        let in_order: Vec<&ConceptAttempted> = attempts.iter().collect();
        let again = reference(&in_order, &t.catalogue);
        for (k, w) in &want {
            prop_assert!(w.same_values(&again[k]), "{:?}", k);
        }
    }
}
