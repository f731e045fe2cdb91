//! The event schemas, compiled in from `schemas/*.avsc` so a binary always
//! encodes with the schema it was built against. Topic names and record
//! names come from the topic table in `novyra_core::topics`.

use novyra_core::Topic;

/// Which of the pipeline's event types a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// `ConceptAttempted` on the attempts topic.
    Attempt,
    /// `ConceptUpserted` on the concepts topic.
    Concept,
    /// `PrerequisiteLinked` on the prerequisites topic.
    Prerequisite,
    /// `MasteryUpdated` on the mastery topic.
    Mastery,
    /// `EvaluationLogged` on the evaluations topic.
    Evaluation,
}

/// Every event kind with its `.avsc` text.
pub const SCHEMAS: [(EventKind, &str); EventKind::ALL.len()] = [
    (
        EventKind::Attempt,
        include_str!("../../../schemas/ConceptAttempted.avsc"),
    ),
    (
        EventKind::Concept,
        include_str!("../../../schemas/ConceptUpserted.avsc"),
    ),
    (
        EventKind::Prerequisite,
        include_str!("../../../schemas/PrerequisiteLinked.avsc"),
    ),
    (
        EventKind::Mastery,
        include_str!("../../../schemas/MasteryUpdated.avsc"),
    ),
    (
        EventKind::Evaluation,
        include_str!("../../../schemas/EvaluationLogged.avsc"),
    ),
];

impl EventKind {
    /// All kinds, in data-flow order.
    pub const ALL: [EventKind; 5] = [
        EventKind::Attempt,
        EventKind::Concept,
        EventKind::Prerequisite,
        EventKind::Mastery,
        EventKind::Evaluation,
    ];

    /// The topic that carries this kind.
    pub const fn topic_kind(self) -> Topic {
        match self {
            EventKind::Attempt => Topic::Attempts,
            EventKind::Concept => Topic::Concepts,
            EventKind::Prerequisite => Topic::Prerequisites,
            EventKind::Mastery => Topic::Mastery,
            EventKind::Evaluation => Topic::Evaluations,
        }
    }

    /// The kind a topic carries (`None` for the DLQ).
    pub fn of(topic: Topic) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.topic_kind() == topic)
    }

    /// The topic name without prefix, per DESIGN.md.
    pub const fn topic_suffix(self) -> &'static str {
        self.topic_kind().suffix()
    }

    /// The topic for `prefix` (default `novyra.`).
    pub fn topic(self, prefix: &str) -> String {
        self.topic_kind().name(prefix)
    }

    /// The Avro full name of the record.
    pub fn record_name(self) -> &'static str {
        self.topic_kind().spec().record.unwrap_or_default()
    }

    /// The `.avsc` text.
    pub fn schema(self) -> &'static str {
        SCHEMAS
            .iter()
            .find(|(k, _)| *k == self)
            .map(|(_, s)| *s)
            .unwrap_or_default()
    }

    /// The compiled-in schema, parsed once: the reader schema every decode
    /// resolves the writer's schema against.
    #[allow(clippy::expect_used)]
    pub fn parsed(self) -> &'static apache_avro::Schema {
        static PARSED: [std::sync::OnceLock<apache_avro::Schema>; EventKind::ALL.len()] =
            [const { std::sync::OnceLock::new() }; EventKind::ALL.len()];
        let i = Self::ALL.iter().position(|k| *k == self).unwrap_or(0);
        PARSED[i].get_or_init(|| {
            // The files are compiled in and parsed by a unit test.
            apache_avro::Schema::parse_str(self.schema()).expect("compiled-in schema parses")
        })
    }

    /// Parses a kind from a topic suffix or a full topic name with `prefix`.
    pub fn from_topic(prefix: &str, topic: &str) -> Option<Self> {
        Topic::parse(prefix, topic).and_then(Self::of)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_schema_parses_and_names_its_record() {
        for kind in EventKind::ALL {
            let schema = apache_avro::Schema::parse_str(kind.schema()).expect("schema parses");
            let name = match schema {
                apache_avro::Schema::Record(r) => r.name.fullname(None),
                other => panic!("{kind:?} is not a record: {other:?}"),
            };
            assert_eq!(name, kind.record_name());
            assert_eq!(
                EventKind::from_topic("novyra.", &kind.topic("novyra.")),
                Some(kind)
            );
        }
    }
}
