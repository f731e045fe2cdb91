//! The pure core of NOVYRA Stream: the events the pipeline carries, their
//! validation, the message keys, and the deterministic mastery model.
//!
//! Nothing here performs I/O, so every rule that decides what lands in
//! PostgreSQL and Neo4j can be tested (and replayed) without a server.

pub mod events;
pub mod keys;
pub mod mastery;
pub mod topics;
pub mod validate;

pub use events::{
    ConceptAttempted, ConceptUpserted, EvaluationLogged, MasteryUpdated, PrerequisiteLinked,
    RubricCriterion, RubricEvaluation,
};
pub use mastery::{BktParams, MasteryState};
pub use topics::{Group, Topic};
pub use validate::ValidationError;

/// `e` and every error beneath it, joined with ": ". Client libraries often
/// put the useful reason (an unknown CA, a refused connection) a level or
/// two down and print only the top line; messages we show must not lose it.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
