//! Validation of decoded events: what the pipeline refuses to store, and the
//! reason it writes on the DLQ record. Rules live here, not in the workers, so
//! every consumer applies the same ones.

use thiserror::Error;

use crate::{ConceptAttempted, ConceptUpserted, MasteryUpdated, PrerequisiteLinked};

/// Earliest plausible event time: 2000-01-01T00:00:00Z.
pub const MIN_EVENT_TIME_MS: i64 = 946_684_800_000;
/// How far in the future an event time may lie (clock skew allowance).
pub const MAX_FUTURE_SKEW_MS: i64 = 24 * 3600 * 1000;
/// Longest id accepted; longer ones are surely not ids.
pub const MAX_ID_LEN: usize = 256;

/// Why an event was refused. The `Display` text is the DLQ reason.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ValidationError {
    /// A required id is empty or absurdly long.
    #[error("field {0} is empty or longer than 256 bytes")]
    BadId(&'static str),
    /// A count or duration is negative.
    #[error("field {0} is negative")]
    Negative(&'static str),
    /// The event time is before 2000 or more than a day in the future.
    #[error("field {field} = {value} ms is outside 2000-01-01 .. now + 1 day")]
    TimeOutOfRange {
        /// The offending field.
        field: &'static str,
        /// Its value.
        value: i64,
    },
    /// A probability or score is not in 0..=1 (or NaN).
    #[error("field {0} is not a number in 0..=1")]
    NotProbability(&'static str),
    /// The key of the Kafka record does not match the value.
    #[error("record key {key:?} does not match the value (expected {expected:?})")]
    KeyMismatch {
        /// The key on the record.
        key: String,
        /// The key the value implies.
        expected: String,
    },
}

impl ValidationError {
    /// A short stable name for metrics labels and the DLQ's exception class.
    pub fn kind(&self) -> &'static str {
        match self {
            ValidationError::BadId(_) => "invalid_id",
            ValidationError::Negative(_) => "negative_value",
            ValidationError::TimeOutOfRange { .. } => "time_out_of_range",
            ValidationError::NotProbability(_) => "not_a_probability",
            ValidationError::KeyMismatch { .. } => "key_mismatch",
        }
    }
}

fn id(field: &'static str, v: &str) -> Result<(), ValidationError> {
    if v.trim().is_empty() || v.len() > MAX_ID_LEN {
        return Err(ValidationError::BadId(field));
    }
    Ok(())
}

fn time(field: &'static str, v: i64, now_ms: i64) -> Result<(), ValidationError> {
    if v < MIN_EVENT_TIME_MS || v > now_ms.saturating_add(MAX_FUTURE_SKEW_MS) {
        return Err(ValidationError::TimeOutOfRange { field, value: v });
    }
    Ok(())
}

fn prob(field: &'static str, v: f64) -> Result<(), ValidationError> {
    if !(0.0..=1.0).contains(&v) {
        return Err(ValidationError::NotProbability(field));
    }
    Ok(())
}

/// Checks an attempt against the rules in DESIGN.md.
pub fn attempt(a: &ConceptAttempted, now_ms: i64) -> Result<(), ValidationError> {
    id("event_id", &a.event_id)?;
    id("user_id", &a.user_id)?;
    id("concept_id", &a.concept_id)?;
    if a.hints_used < 0 {
        return Err(ValidationError::Negative("hints_used"));
    }
    if a.duration_ms < 0 {
        return Err(ValidationError::Negative("duration_ms"));
    }
    time("occurred_at", a.occurred_at, now_ms)?;
    if let Some(r) = &a.rubric {
        id("rubric.rubric_id", &r.rubric_id)?;
        prob("rubric.weighted_total", r.weighted_total)?;
    }
    Ok(())
}

/// Checks a concept definition, including any explicit BKT parameters.
pub fn concept(c: &ConceptUpserted) -> Result<(), ValidationError> {
    id("concept_id", &c.concept_id)?;
    id("name", &c.name)?;
    id("domain", &c.domain)?;
    prob("difficulty", c.difficulty)?;
    for (f, v) in [
        ("bkt_p_init", c.bkt_p_init),
        ("bkt_p_transit", c.bkt_p_transit),
        ("bkt_p_slip", c.bkt_p_slip),
        ("bkt_p_guess", c.bkt_p_guess),
    ] {
        if let Some(v) = v {
            prob(f, v)?;
        }
    }
    if !crate::BktParams::for_concept(c).is_valid() {
        return Err(ValidationError::NotProbability("bkt_p_slip + bkt_p_guess"));
    }
    Ok(())
}

/// Checks a prerequisite link; a concept cannot be its own prerequisite.
pub fn prerequisite(p: &PrerequisiteLinked) -> Result<(), ValidationError> {
    id("prerequisite_id", &p.prerequisite_id)?;
    id("concept_id", &p.concept_id)?;
    if p.prerequisite_id == p.concept_id {
        return Err(ValidationError::BadId(
            "prerequisite_id (equals concept_id)",
        ));
    }
    Ok(())
}

/// Checks a mastery update.
pub fn mastery(m: &MasteryUpdated) -> Result<(), ValidationError> {
    id("user_id", &m.user_id)?;
    id("concept_id", &m.concept_id)?;
    prob("mastery", m.mastery)?;
    if m.version < 0 {
        return Err(ValidationError::Negative("version"));
    }
    Ok(())
}

/// Checks that a record key equals the key the value implies.
pub fn key_matches(key: Option<&str>, expected: &str) -> Result<(), ValidationError> {
    match key {
        Some(k) if k == expected => Ok(()),
        other => Err(ValidationError::KeyMismatch {
            key: other.unwrap_or("").to_owned(),
            expected: expected.to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_attempt() -> ConceptAttempted {
        ConceptAttempted {
            event_id: "e1".into(),
            user_id: "u1".into(),
            concept_id: "c1".into(),
            occurred_at: 1_700_000_000_000,
            correct: true,
            hints_used: 0,
            duration_ms: 1000,
            rubric: None,
        }
    }

    #[test]
    fn rejects_each_bad_field() {
        let now = 1_700_000_000_000;
        assert!(attempt(&ok_attempt(), now).is_ok());
        let cases: Vec<(ConceptAttempted, &str)> = vec![
            (
                ConceptAttempted {
                    event_id: "".into(),
                    ..ok_attempt()
                },
                "event_id",
            ),
            (
                ConceptAttempted {
                    user_id: " ".into(),
                    ..ok_attempt()
                },
                "user_id",
            ),
            (
                ConceptAttempted {
                    hints_used: -1,
                    ..ok_attempt()
                },
                "hints_used",
            ),
            (
                ConceptAttempted {
                    duration_ms: -5,
                    ..ok_attempt()
                },
                "duration_ms",
            ),
            (
                ConceptAttempted {
                    occurred_at: 1,
                    ..ok_attempt()
                },
                "occurred_at",
            ),
            (
                ConceptAttempted {
                    occurred_at: now + 2 * MAX_FUTURE_SKEW_MS,
                    ..ok_attempt()
                },
                "occurred_at",
            ),
        ];
        for (a, field) in cases {
            let err = attempt(&a, now).expect_err(field).to_string();
            assert!(err.contains(field), "{err} should name {field}");
        }
    }
}
