//! Replay determinism (DESIGN.md): mastery is a pure function of each
//! (user, concept)'s ordered attempts, so any interleaving of different
//! users' attempts and any batching gives bit-identical state.

use std::collections::BTreeMap;

use novyra_core::{BktParams, ConceptAttempted, MasteryState};
use proptest::prelude::*;

type Key = (String, String);

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

fn params(concept: &str) -> BktParams {
    BktParams::from_difficulty(
        concept
            .trim_start_matches('c')
            .parse::<f64>()
            .unwrap_or(0.0)
            / 4.0,
    )
}

/// Applies attempts in the given order, flushing state into a "store"
/// after each batch of `batch` records, as the ingest transaction does.
fn replay(order: &[&ConceptAttempted], batch: usize) -> BTreeMap<Key, MasteryState> {
    let mut stored: BTreeMap<Key, MasteryState> = BTreeMap::new();
    for chunk in order.chunks(batch.max(1)) {
        let mut working: BTreeMap<Key, MasteryState> = BTreeMap::new();
        for a in chunk {
            let key = (a.user_id.clone(), a.concept_id.clone());
            let p = params(&a.concept_id);
            let state = working.entry(key.clone()).or_insert_with(|| {
                stored
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| MasteryState::initial(&p))
            });
            state.apply(a, &p);
        }
        stored.extend(working);
    }
    stored
}

fn bits(m: &BTreeMap<Key, MasteryState>) -> Vec<(Key, u64, u64, i64, i64)> {
    m.iter()
        .map(|(k, s)| {
            (
                k.clone(),
                s.mastery.to_bits(),
                s.confidence_weight.to_bits(),
                s.attempts_total,
                s.attempts_correct,
            )
        })
        .collect()
}

proptest! {
    #[test]
    fn any_user_interleaving_and_batching_gives_identical_mastery(
        raw in prop::collection::vec((0u8..4, 0u8..4, any::<bool>(), 0u8..3), 1..200),
        shuffle_seed in any::<u64>(),
        batch_a in 1usize..50,
        batch_b in 1usize..50,
    ) {
        let attempts: Vec<ConceptAttempted> =
            raw.iter().enumerate().map(|(i, &(u, c, ok, h))| attempt(i, u, c, ok, h)).collect();
        let in_order: Vec<&ConceptAttempted> = attempts.iter().collect();

        // Interleave users differently while keeping each user's own order
        // (what partitioning by user id guarantees).
        let mut queues: BTreeMap<&str, std::collections::VecDeque<&ConceptAttempted>> = BTreeMap::new();
        for a in &attempts {
            queues.entry(a.user_id.as_str()).or_default().push_back(a);
        }
        let mut state = shuffle_seed;
        let mut interleaved = Vec::with_capacity(attempts.len());
        while interleaved.len() < attempts.len() {
            let users: Vec<&str> = queues.iter().filter(|(_, q)| !q.is_empty()).map(|(u, _)| *u).collect();
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let u = users[(state >> 33) as usize % users.len()];
            if let Some(a) = queues.get_mut(u).and_then(|q| q.pop_front()) {
                interleaved.push(a);
            }
        }

        let reference = bits(&replay(&in_order, in_order.len()));
        prop_assert_eq!(&reference, &bits(&replay(&in_order, batch_a)));
        prop_assert_eq!(&reference, &bits(&replay(&interleaved, batch_b)));
    }
}
