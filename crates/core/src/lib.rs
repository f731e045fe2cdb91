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
