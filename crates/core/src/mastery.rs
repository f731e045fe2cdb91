//! Bayesian Knowledge Tracing, the default mastery model (DESIGN.md).
//!
//! Mastery of a (user, concept) is a pure function of the ordered attempts and
//! the BKT parameters, computed with plain `f64` operations in a fixed order
//! (no fused multiply-add, no parallel sums), so a replay gives bit-identical
//! values whatever the batch size or number of consumers.

use serde::{Deserialize, Serialize};

/// Difficulty assumed for a concept the catalog does not know (yet).
pub const DEFAULT_DIFFICULTY: f64 = 0.5;

/// The four BKT parameters, all probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BktParams {
    /// P(L0): the student knows the concept before any attempt.
    pub p_init: f64,
    /// P(T): learning on each opportunity.
    pub p_transit: f64,
    /// P(S): a student who knows it still answers wrong.
    pub p_slip: f64,
    /// P(G): a student who does not know it still answers right.
    pub p_guess: f64,
}

impl BktParams {
    /// The documented defaults for a concept of `difficulty` (clamped to 0..=1):
    /// harder concepts start lower, are learnt slower, slip more, guess less.
    ///
    /// | difficulty | p_init | p_transit | p_slip | p_guess |
    /// |---|---|---|---|---|
    /// | 0.0 | 0.30 | 0.20 | 0.08 | 0.25 |
    /// | 0.5 | 0.175 | 0.14 | 0.10 | 0.175 |
    /// | 1.0 | 0.05 | 0.08 | 0.12 | 0.10 |
    pub fn from_difficulty(difficulty: f64) -> Self {
        let d = if difficulty.is_nan() {
            DEFAULT_DIFFICULTY
        } else {
            difficulty.clamp(0.0, 1.0)
        };
        Self {
            p_init: 0.30 - 0.25 * d,
            p_transit: 0.20 - 0.12 * d,
            p_slip: 0.08 + 0.04 * d,
            p_guess: 0.25 - 0.15 * d,
        }
    }

    /// Parameters of a concept event: explicit overrides win over the
    /// difficulty-derived defaults, field by field.
    pub fn for_concept(c: &crate::ConceptUpserted) -> Self {
        let base = Self::from_difficulty(c.difficulty);
        Self {
            p_init: c.bkt_p_init.unwrap_or(base.p_init),
            p_transit: c.bkt_p_transit.unwrap_or(base.p_transit),
            p_slip: c.bkt_p_slip.unwrap_or(base.p_slip),
            p_guess: c.bkt_p_guess.unwrap_or(base.p_guess),
        }
    }

    /// True when every parameter is a probability and the model is identifiable
    /// (slip + guess < 1); anything else would make mastery meaningless.
    pub fn is_valid(&self) -> bool {
        let p = |x: f64| x.is_finite() && (0.0..=1.0).contains(&x);
        p(self.p_init)
            && p(self.p_transit)
            && p(self.p_slip)
            && p(self.p_guess)
            && self.p_slip + self.p_guess < 1.0
    }
}

impl Default for BktParams {
    fn default() -> Self {
        Self::from_difficulty(DEFAULT_DIFFICULTY)
    }
}

/// One BKT step: the posterior given the observation, then the learning
/// transition. A hinted attempt counts as a wrong observation.
pub fn bkt_update(p_l: f64, observed_correct: bool, params: &BktParams) -> f64 {
    let BktParams {
        p_transit: t,
        p_slip: s,
        p_guess: g,
        ..
    } = *params;
    let posterior = if observed_correct {
        let num = p_l * (1.0 - s);
        num / (num + (1.0 - p_l) * g)
    } else {
        let num = p_l * s;
        num / (num + (1.0 - p_l) * (1.0 - g))
    };
    posterior + (1.0 - posterior) * t
}

/// The running state kept in `mastery_records` for one (user, concept).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MasteryState {
    /// Current P(L).
    pub mastery: f64,
    /// Attempts applied.
    pub attempts_total: i64,
    /// Correct attempts applied (hinted or not).
    pub attempts_correct: i64,
    /// Sum of `1 / (1 + hints_used)`.
    pub confidence_weight: f64,
    /// Event id of the last attempt applied.
    pub last_event_id: String,
    /// Event time of the last attempt applied, epoch milliseconds.
    pub updated_at: i64,
    /// Changes so far: one per attempt applied, plus one per recomputation
    /// that changed the state (new BKT parameters). The graph and the
    /// mastery topic order updates by it, so it only ever grows.
    pub version: i64,
}

/// What applying one attempt did, for the attempt's audit row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Applied {
    /// P(L) before the attempt.
    pub before: f64,
    /// P(L) after the attempt.
    pub after: f64,
    /// The state's version after the attempt.
    pub version: i64,
}

impl MasteryState {
    /// The state before any attempt: the prior.
    pub fn initial(params: &BktParams) -> Self {
        Self {
            mastery: params.p_init,
            attempts_total: 0,
            attempts_correct: 0,
            confidence_weight: 0.0,
            last_event_id: String::new(),
            updated_at: 0,
            version: 0,
        }
    }

    /// The state after `attempts` in order, from the prior of `params`: what
    /// `mastery_records` must hold for a pair once its concept's parameters
    /// are `params` (the version is left at the count; callers that replace
    /// a stored state set it above the stored one).
    pub fn replay<'a>(
        params: &BktParams,
        attempts: impl IntoIterator<Item = &'a crate::ConceptAttempted>,
    ) -> Self {
        let mut s = Self::initial(params);
        for a in attempts {
            s.apply(a, params);
        }
        s
    }

    /// Whether two states hold the same values, bit for bit, whatever
    /// their versions.
    pub fn same_values(&self, other: &Self) -> bool {
        self.mastery.to_bits() == other.mastery.to_bits()
            && self.attempts_total == other.attempts_total
            && self.attempts_correct == other.attempts_correct
            && self.confidence_weight.to_bits() == other.confidence_weight.to_bits()
            && self.last_event_id == other.last_event_id
            && self.updated_at == other.updated_at
    }

    /// The version: see the field.
    pub fn version(&self) -> i64 {
        self.version
    }

    /// Applies one attempt in place.
    pub fn apply(&mut self, attempt: &crate::ConceptAttempted, params: &BktParams) -> Applied {
        let before = self.mastery;
        let observed_correct = attempt.correct && attempt.hints_used == 0;
        self.mastery = bkt_update(before, observed_correct, params);
        self.attempts_total += 1;
        if attempt.correct {
            self.attempts_correct += 1;
        }
        self.confidence_weight += 1.0 / (1.0 + f64::from(attempt.hints_used.max(0)));
        self.last_event_id.clone_from(&attempt.event_id);
        self.updated_at = attempt.occurred_at;
        self.version += 1;
        Applied {
            before,
            after: self.mastery,
            version: self.version,
        }
    }

    /// The event that publishes this state on the mastery topic.
    pub fn to_event(&self, user_id: &str, concept_id: &str) -> crate::MasteryUpdated {
        crate::MasteryUpdated {
            user_id: user_id.to_owned(),
            concept_id: concept_id.to_owned(),
            mastery: self.mastery,
            version: self.version(),
            attempts_total: self.attempts_total,
            attempts_correct: self.attempts_correct,
            confidence_weight: self.confidence_weight,
            last_event_id: self.last_event_id.clone(),
            updated_at: self.updated_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn correct_answers_raise_mastery_wrong_lower_it() {
        let p = BktParams::default();
        let up = bkt_update(0.3, true, &p);
        let down = bkt_update(0.3, false, &p);
        assert!(up > 0.3, "{up}");
        assert!(down < up);
        // hand-computed: posterior = 0.3*0.9/(0.3*0.9+0.7*0.175) = 0.27/0.3925
        let post = 0.27 / (0.27 + 0.7 * 0.175);
        let expected = post + (1.0 - post) * 0.14;
        assert!((bkt_update(0.3, true, &p) - expected).abs() < 1e-12);
    }

    #[test]
    fn defaults_follow_difficulty_table() {
        let easy = BktParams::from_difficulty(0.0);
        let hard = BktParams::from_difficulty(1.0);
        assert!((easy.p_init - 0.30).abs() < 1e-12 && (hard.p_init - 0.05).abs() < 1e-12);
        assert!(
            easy.is_valid() && hard.is_valid() && BktParams::from_difficulty(f64::NAN).is_valid()
        );
        assert!(!BktParams {
            p_slip: 0.6,
            p_guess: 0.5,
            ..easy
        }
        .is_valid());
    }
}
