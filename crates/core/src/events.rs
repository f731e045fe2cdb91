//! The event records, one per Avro schema in `schemas/`.
//!
//! Field names match the `.avsc` files exactly so that serde maps them to and
//! from Avro values; timestamps are epoch milliseconds (`timestamp-millis`).
//! Optional fields carry `#[serde(default)]` so a reader of an older or newer
//! schema version still decodes them (BACKWARD and FORWARD compatible).

use serde::{Deserialize, Serialize};

/// A student's attempt at a concept: the fact every mastery value derives from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConceptAttempted {
    /// Producer-assigned unique id; the dedup key for retried publishes.
    pub event_id: String,
    /// The student; also the Kafka key, so one student's attempts stay ordered.
    pub user_id: String,
    /// The concept attempted.
    pub concept_id: String,
    /// When the student answered, epoch milliseconds.
    pub occurred_at: i64,
    /// Whether the answer was right.
    pub correct: bool,
    /// Hints used; any hint makes the observation count as wrong.
    pub hints_used: i32,
    /// Time spent on the attempt.
    pub duration_ms: i64,
    /// A rubric grading of a free-form answer, when there was one.
    #[serde(default)]
    pub rubric: Option<RubricEvaluation>,
}

/// A rubric grading attached to an attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RubricEvaluation {
    /// The rubric used.
    pub rubric_id: String,
    /// Weighted total score across criteria, 0..=1.
    pub weighted_total: f64,
    /// Per-criterion scores; stored as JSONB for analysts.
    pub criteria: Vec<RubricCriterion>,
}

/// One rubric criterion's score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RubricCriterion {
    /// Criterion name.
    pub name: String,
    /// Score for this criterion, 0..=1.
    pub score: f64,
    /// Weight of this criterion in the total.
    pub weight: f64,
}

/// One model evaluation (prompt, response, rubric scores), kept in an
/// append-only audit log so a grade can be traced to what the model saw and
/// said. The three documents travel as JSON text because Avro has no
/// free-form type; validation checks that they parse, and Postgres stores
/// them as JSONB.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvaluationLogged {
    /// Producer-assigned unique id; the dedup key for retried publishes.
    pub event_id: String,
    /// The student; also the Kafka key.
    pub user_id: String,
    /// The concept evaluated, if any.
    #[serde(default)]
    pub concept_id: Option<String>,
    /// The attempt evaluated, if any.
    #[serde(default)]
    pub attempt_event_id: Option<String>,
    /// The model and version that answered.
    pub model: String,
    /// JSON: what the model was asked.
    pub prompt: String,
    /// JSON: what it answered.
    pub response: String,
    /// JSON: the rubric scores drawn from the response.
    #[serde(default)]
    pub rubric: Option<String>,
    /// When the evaluation ran, epoch milliseconds.
    pub occurred_at: i64,
}

/// The latest definition of a concept; a tombstone on its key deletes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConceptUpserted {
    /// Stable concept id; the Kafka key.
    pub concept_id: String,
    /// Display name.
    pub name: String,
    /// The domain the concept is `PART_OF`.
    pub domain: String,
    /// 0 (easy) ..= 1 (hard); the BKT defaults derive from it.
    pub difficulty: f64,
    /// Explicit BKT prior, overriding the difficulty-derived default.
    #[serde(default)]
    pub bkt_p_init: Option<f64>,
    /// Explicit BKT learn rate.
    #[serde(default)]
    pub bkt_p_transit: Option<f64>,
    /// Explicit BKT slip probability.
    #[serde(default)]
    pub bkt_p_slip: Option<f64>,
    /// Explicit BKT guess probability.
    #[serde(default)]
    pub bkt_p_guess: Option<f64>,
    /// When the curriculum changed, epoch milliseconds.
    pub updated_at: i64,
}

/// `prerequisite_id` must be learnt before `concept_id`; a tombstone unlinks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrerequisiteLinked {
    /// The concept to learn first.
    pub prerequisite_id: String,
    /// The concept that depends on it.
    pub concept_id: String,
    /// When the link was made, epoch milliseconds.
    pub linked_at: i64,
}

/// The latest mastery of one student on one concept, as committed to Postgres.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MasteryUpdated {
    /// The student.
    pub user_id: String,
    /// The concept.
    pub concept_id: String,
    /// P(L) after the last applied attempt.
    pub mastery: f64,
    /// Changes applied (attempts plus recomputations); orders updates for the graph's version guard.
    pub version: i64,
    /// Attempts applied.
    pub attempts_total: i64,
    /// Correct attempts applied.
    pub attempts_correct: i64,
    /// Sum of `1 / (1 + hints_used)` over applied attempts.
    pub confidence_weight: f64,
    /// Event id of the last applied attempt.
    pub last_event_id: String,
    /// Time of the last applied attempt (event time), epoch milliseconds.
    pub updated_at: i64,
}
