//! One row per topic: its suffix, partitions, cleanup policy, retention,
//! key, the record it carries and the consumer groups that read it. Topic
//! creation, schema registration, the workers' subscriptions, lag, produce,
//! tail, the DLQ and reconcile all read this table, so a topic's facts are
//! written once and every name is checked by the compiler.
//!
//! Adding an event kind starts here (CONTRIBUTING.md has the checklist).

/// A topic of the pipeline (its name is the prefix, `novyra.` by default,
/// plus the suffix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// `ConceptAttempted`, keyed by user.
    Attempts,
    /// `ConceptUpserted`, compacted, keyed by concept.
    Concepts,
    /// `PrerequisiteLinked`, compacted, keyed `prerequisite>concept`.
    Prerequisites,
    /// `MasteryUpdated`, compacted, keyed `user/concept`; written by the relay.
    Mastery,
    /// `EvaluationLogged`, keyed by user: the audit log of model evaluations.
    Evaluations,
    /// Dead letters of every group, with the reason in headers.
    Dlq,
}

/// A consumer group of the pipeline (its id is the group prefix plus the
/// suffix, `novyra-ingest` by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Group {
    /// Attempts into Postgres (and the outbox relay beside it).
    Ingest,
    /// Concepts and prerequisites into Postgres.
    Catalog,
    /// Concepts, prerequisites and mastery into Neo4j.
    Graph,
    /// Evaluations into the audit log in Postgres.
    Audit,
}

/// The group id suffix of readers that never join a group or commit
/// (`tail`, `lag`, `dlq`, reconcile): librdkafka still asks for its
/// coordinator, so Kafka ACLs must let their principals describe it.
pub const READER_GROUP_SUFFIX: &str = "reader";

/// How Kafka keeps a topic's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cleanup {
    /// Time-based deletion.
    Delete,
    /// The latest record per key (tombstones delete).
    Compact,
}

/// Every fact about one topic.
#[derive(Debug)]
pub struct TopicSpec {
    /// Which topic.
    pub topic: Topic,
    /// The name after the prefix.
    pub suffix: &'static str,
    /// Partition count at creation.
    pub partitions: i32,
    /// Cleanup policy.
    pub cleanup: Cleanup,
    /// Retention in days for a deleting topic; `None`: the deployment
    /// decides (attempts: `kafka.attempts_retention_ms`, forever by
    /// default, which replay relies on).
    pub retention_days: Option<u32>,
    /// What the key is.
    pub key: &'static str,
    /// The Avro record's full name; `None` for the DLQ, which carries the
    /// source topics' records unchanged.
    pub record: Option<&'static str>,
    /// The groups that consume it.
    pub consumed_by: &'static [Group],
}

/// The table, in data-flow order; `Topic as usize` indexes it.
pub const TOPICS: [TopicSpec; 6] = [
    TopicSpec {
        topic: Topic::Attempts,
        suffix: "attempts",
        partitions: 12,
        cleanup: Cleanup::Delete,
        retention_days: None,
        key: "user_id",
        record: Some("io.novyra.events.ConceptAttempted"),
        consumed_by: &[Group::Ingest],
    },
    TopicSpec {
        topic: Topic::Concepts,
        suffix: "concepts",
        partitions: 3,
        cleanup: Cleanup::Compact,
        retention_days: None,
        key: "concept_id",
        record: Some("io.novyra.events.ConceptUpserted"),
        consumed_by: &[Group::Catalog, Group::Graph],
    },
    TopicSpec {
        topic: Topic::Prerequisites,
        suffix: "prerequisites",
        partitions: 3,
        cleanup: Cleanup::Compact,
        retention_days: None,
        key: "prerequisite_id>concept_id",
        record: Some("io.novyra.events.PrerequisiteLinked"),
        consumed_by: &[Group::Catalog, Group::Graph],
    },
    TopicSpec {
        topic: Topic::Mastery,
        suffix: "mastery",
        partitions: 12,
        cleanup: Cleanup::Compact,
        retention_days: None,
        key: "user_id/concept_id",
        record: Some("io.novyra.events.MasteryUpdated"),
        consumed_by: &[Group::Graph],
    },
    TopicSpec {
        topic: Topic::Evaluations,
        suffix: "evaluations",
        partitions: 6,
        cleanup: Cleanup::Delete,
        // Postgres is the audit record; Kafka keeps a month to replay from.
        retention_days: Some(30),
        key: "user_id",
        record: Some("io.novyra.events.EvaluationLogged"),
        consumed_by: &[Group::Audit],
    },
    TopicSpec {
        topic: Topic::Dlq,
        suffix: "dlq",
        partitions: 3,
        cleanup: Cleanup::Delete,
        retention_days: Some(90),
        key: "the source record's key",
        record: None,
        consumed_by: &[],
    },
];

impl Topic {
    /// Every topic, in data-flow order.
    pub const ALL: [Topic; 6] = [
        Topic::Attempts,
        Topic::Concepts,
        Topic::Prerequisites,
        Topic::Mastery,
        Topic::Evaluations,
        Topic::Dlq,
    ];

    /// Its row of [`TOPICS`].
    pub const fn spec(self) -> &'static TopicSpec {
        &TOPICS[self as usize]
    }

    /// The name after the prefix.
    pub const fn suffix(self) -> &'static str {
        self.spec().suffix
    }

    /// The full name with `prefix`.
    pub fn name(self, prefix: &str) -> String {
        format!("{prefix}{}", self.suffix())
    }

    /// The topic a suffix (`attempts`) or a full name with `prefix`
    /// (`novyra.attempts`) names.
    pub fn parse(prefix: &str, name: &str) -> Option<Topic> {
        let suffix = name.strip_prefix(prefix).unwrap_or(name);
        Self::ALL.into_iter().find(|t| t.suffix() == suffix)
    }
}

impl Topic {
    /// Whether upstream applications publish it (it carries a record and
    /// no group of the pipeline writes it).
    pub fn is_source(self) -> bool {
        self.spec().record.is_some() && !Group::ALL.iter().any(|g| g.writes().contains(&self))
    }
}

impl Group {
    /// Every group, in data-flow order.
    pub const ALL: [Group; 4] = [Group::Catalog, Group::Ingest, Group::Graph, Group::Audit];

    /// The group id after the group prefix.
    pub const fn suffix(self) -> &'static str {
        match self {
            Group::Ingest => "ingest",
            Group::Catalog => "catalog",
            Group::Graph => "graph",
            Group::Audit => "audit",
        }
    }

    /// The topics it writes: the DLQ, and the mastery topic for the groups
    /// that publish mastery (the ingest's outbox relay; the graph's
    /// scheduled reconcile, which republishes rows the topic lacks). Kafka
    /// ACLs grant exactly these.
    pub const fn writes(self) -> &'static [Topic] {
        match self {
            Group::Ingest | Group::Graph => &[Topic::Mastery, Topic::Dlq],
            Group::Catalog | Group::Audit => &[Topic::Dlq],
        }
    }

    /// The topics it consumes, from [`TOPICS`].
    pub fn topics(self) -> Vec<Topic> {
        TOPICS
            .iter()
            .filter(|s| s.consumed_by.contains(&self))
            .map(|s| s.topic)
            .collect()
    }

    /// The group a suffix names.
    pub fn parse(suffix: &str) -> Option<Group> {
        Self::ALL.into_iter().find(|g| g.suffix() == suffix)
    }
}

/// Header of a mastery record (written by the outbox relay): the Kafka
/// timestamp, in decimal milliseconds since the epoch, of the oldest
/// attempt the update applies. Absent on recomputations. The graph sink
/// measures `novyra_graph_freshness_seconds` from it.
pub const SOURCE_TS_HEADER: &str = "novyra-source-ts";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_indexed_by_the_enum_and_names_are_unique() {
        for t in Topic::ALL {
            assert_eq!(t.spec().topic, t);
            assert_eq!(Topic::parse("novyra.", &t.name("novyra.")), Some(t));
            assert_eq!(Topic::parse("novyra.", t.suffix()), Some(t));
        }
        assert_eq!(Topic::parse("novyra.", "novyra.nope"), None);
        assert_eq!(Group::Ingest.topics(), [Topic::Attempts]);
        assert_eq!(
            Group::Catalog.topics(),
            [Topic::Concepts, Topic::Prerequisites]
        );
        assert_eq!(
            Group::Graph.topics(),
            [Topic::Concepts, Topic::Prerequisites, Topic::Mastery]
        );
        assert_eq!(Group::Audit.topics(), [Topic::Evaluations]);
        let sources: Vec<Topic> = Topic::ALL.into_iter().filter(|t| t.is_source()).collect();
        assert_eq!(
            sources,
            [
                Topic::Attempts,
                Topic::Concepts,
                Topic::Prerequisites,
                Topic::Evaluations
            ]
        );
        for g in Group::ALL {
            assert_eq!(Group::parse(g.suffix()), Some(g));
        }
    }
}
