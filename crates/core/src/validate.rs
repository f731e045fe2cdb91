//! Validation of decoded events: what the pipeline refuses to store, and the
//! reason it writes on the DLQ record. Rules live here, not in the workers, so
//! every consumer applies the same ones.

use thiserror::Error;

use crate::{
    ConceptAttempted, ConceptUpserted, EvaluationLogged, MasteryUpdated, PrerequisiteLinked,
};

/// Earliest plausible event time: 2000-01-01T00:00:00Z.
pub const MIN_EVENT_TIME_MS: i64 = 946_684_800_000;
/// How far in the future an event time may lie (clock skew allowance).
pub const MAX_FUTURE_SKEW_MS: i64 = 24 * 3600 * 1000;
/// Longest id accepted; longer ones are surely not ids.
pub const MAX_ID_LEN: usize = 256;

/// Why an event was refused. The `Display` text is the DLQ reason.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum ValidationError {
    /// A required id is empty, absurdly long, or holds a NUL (which
    /// Postgres text cannot store).
    #[error("field {0} is empty, longer than 256 bytes or contains NUL")]
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
    /// A field that must hold a JSON document does not, or holds one
    /// Postgres' jsonb cannot store.
    #[error("field {field} is not a storable JSON document: {reason}")]
    NotJson {
        /// The offending field.
        field: &'static str,
        /// Why.
        reason: String,
    },
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
            ValidationError::NotJson { .. } => "invalid_json",
            ValidationError::KeyMismatch { .. } => "key_mismatch",
        }
    }
}

fn id(field: &'static str, v: &str) -> Result<(), ValidationError> {
    if v.trim().is_empty() || v.len() > MAX_ID_LEN || v.contains('\0') {
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
        // The criteria are stored as jsonb, which refuses NUL in strings.
        if r.criteria.iter().any(|c| c.name.contains('\0')) {
            return Err(ValidationError::BadId("rubric.criteria.name"));
        }
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

/// Largest JSON document accepted in an evaluation (1 MiB, Kafka's default
/// record size): a bigger one is surely a producer bug.
pub const MAX_DOCUMENT_LEN: usize = 1 << 20;

fn json(field: &'static str, text: &str) -> Result<(), ValidationError> {
    let bad = |reason: String| Err(ValidationError::NotJson { field, reason });
    if text.len() > MAX_DOCUMENT_LEN {
        return bad(format!("{} bytes, over {MAX_DOCUMENT_LEN}", text.len()));
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Err(e) => bad(e.to_string()),
        // NB: jsonb refuses \u0000 in any string, and a batch that fails
        // on it would be retried as a whole before the record is found.
        Ok(v) if holds_nul(&v) => bad("a string holds \\u0000, which jsonb cannot store".into()),
        Ok(_) => Ok(()),
    }
}

fn holds_nul(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(holds_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// Checks a model evaluation: its ids, its time, and that its documents
/// are JSON that Postgres can store.
pub fn evaluation(e: &EvaluationLogged, now_ms: i64) -> Result<(), ValidationError> {
    id("event_id", &e.event_id)?;
    id("user_id", &e.user_id)?;
    id("model", &e.model)?;
    if let Some(c) = &e.concept_id {
        id("concept_id", c)?;
    }
    if let Some(a) = &e.attempt_event_id {
        id("attempt_event_id", a)?;
    }
    time("occurred_at", e.occurred_at, now_ms)?;
    json("prompt", &e.prompt)?;
    json("response", &e.response)?;
    if let Some(r) = &e.rubric {
        json("rubric", r)?;
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

    fn ok_evaluation() -> EvaluationLogged {
        EvaluationLogged {
            event_id: "ev1".into(),
            user_id: "u1".into(),
            concept_id: Some("c1".into()),
            attempt_event_id: None,
            model: "tutor-2026-10".into(),
            prompt: r#"{"template":"explain","vars":{"concept":"c1"}}"#.into(),
            response: r#"{"verdict":"partial","flags":["off_topic"]}"#.into(),
            rubric: Some(r#"{"clarity":0.5}"#.into()),
            occurred_at: 1_700_000_000_000,
        }
    }

    #[test]
    fn evaluations_need_storable_json_and_ids() {
        let now = 1_700_000_000_000;
        assert_eq!(evaluation(&ok_evaluation(), now), Ok(()));
        let kind = |e: EvaluationLogged| evaluation(&e, now).map_err(|e| (e.kind(), e.to_string()));
        let (k, msg) = kind(EvaluationLogged {
            response: "{not json".into(),
            ..ok_evaluation()
        })
        .expect_err("broken JSON");
        assert_eq!(k, "invalid_json");
        assert!(msg.contains("response"), "{msg}");
        let (k, msg) = kind(EvaluationLogged {
            prompt: r#"{"text":"a\u0000b"}"#.into(),
            ..ok_evaluation()
        })
        .expect_err("NUL inside a JSON string");
        assert_eq!(k, "invalid_json");
        assert!(msg.contains("prompt"), "{msg}");
        let (k, _) = kind(EvaluationLogged {
            rubric: Some("[1,".into()),
            ..ok_evaluation()
        })
        .expect_err("broken rubric");
        assert_eq!(k, "invalid_json");
        let (k, _) = kind(EvaluationLogged {
            model: "a\0b".into(),
            ..ok_evaluation()
        })
        .expect_err("NUL in a text column");
        assert_eq!(k, "invalid_id");
        let (k, _) = kind(EvaluationLogged {
            occurred_at: 5,
            ..ok_evaluation()
        })
        .expect_err("time");
        assert_eq!(k, "time_out_of_range");
        // Any JSON value is a document, not only objects.
        assert_eq!(
            evaluation(
                &EvaluationLogged {
                    response: "\"plain text answer\"".into(),
                    rubric: None,
                    ..ok_evaluation()
                },
                now
            ),
            Ok(())
        );
    }

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
