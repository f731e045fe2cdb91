//! Least privilege in Kafka: the ACLs of every principal of the pipeline,
//! derived from the topic table, so a new topic or group gets its grants
//! without anyone writing them. `novyra acls --json` prints them and
//! `deploy/kafka-acls.py` applies them with Kafka's admin API.
//!
//! | principal          | may                                                        |
//! |--------------------|------------------------------------------------------------|
//! | `<p>ingest` etc.   | read its group's topics and its group, write what it writes |
//! | `<p>producer`      | write the source topics (what upstream apps publish)        |
//! | `<p>analyst`       | read every topic, describe groups (lag); join no group      |
//!
//! Creating topics, registering schemas, DLQ replay and `rewind` are
//! administration, done by an admin principal outside this list.

use novyra_core::topics::{Group, Topic, READER_GROUP_SUFFIX};
use serde::Serialize;

/// What an ACL is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Resource {
    /// A topic.
    Topic,
    /// A consumer group.
    Group,
}

/// How the resource name matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Pattern {
    /// Exactly this name.
    Literal,
    /// Every name starting with it.
    Prefixed,
}

/// The operation allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Operation {
    /// Consume (implies describe).
    Read,
    /// Produce (implies describe).
    Write,
    /// Metadata and offsets only.
    Describe,
}

/// One ALLOW rule, as Kafka's `AclBinding` has it (host `*`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Acl {
    /// `User:<name>`.
    pub principal: String,
    /// Resource type.
    pub resource_type: Resource,
    /// Resource name.
    pub resource_name: String,
    /// Pattern type.
    pub pattern_type: Pattern,
    /// Operation.
    pub operation: Operation,
}

/// Names: the topic prefix (`novyra.`), the group id of a group, and the
/// prefix of principal names (`novyra-`).
#[derive(Debug, Clone)]
pub struct Naming<'a> {
    /// Topic name prefix.
    pub topic_prefix: &'a str,
    /// Group id prefix, as `<prefix>-<suffix>` forms group ids.
    pub group_prefix: &'a str,
    /// Principal name prefix.
    pub principal_prefix: &'a str,
}

impl Naming<'_> {
    /// The user a group's workers authenticate as.
    pub fn principal(&self, role: &str) -> String {
        format!("{}{role}", self.principal_prefix)
    }

    fn topic(&self, t: Topic) -> String {
        t.name(self.topic_prefix)
    }
}

/// Every ACL of the pipeline's principals.
pub fn pipeline_acls(n: &Naming<'_>) -> Vec<Acl> {
    let mut out = Vec::new();
    let mut allow = |who: &str, resource_type, resource_name: String, pattern_type, operation| {
        out.push(Acl {
            principal: format!("User:{who}"),
            resource_type,
            resource_name,
            pattern_type,
            operation,
        })
    };
    for g in Group::ALL {
        let who = n.principal(g.suffix());
        for t in g.topics() {
            allow(
                &who,
                Resource::Topic,
                n.topic(t),
                Pattern::Literal,
                Operation::Read,
            );
        }
        for t in g.writes() {
            allow(
                &who,
                Resource::Topic,
                n.topic(*t),
                Pattern::Literal,
                Operation::Write,
            );
        }
        allow(
            &who,
            Resource::Group,
            format!("{}-{}", n.group_prefix, g.suffix()),
            Pattern::Literal,
            Operation::Read,
        );
        // Reconcile and the DLQ tools read through the never-joined reader
        // group; librdkafka looks up its coordinator.
        allow(
            &who,
            Resource::Group,
            format!("{}-{READER_GROUP_SUFFIX}", n.group_prefix),
            Pattern::Literal,
            Operation::Describe,
        );
    }
    let producer = n.principal("producer");
    for t in Topic::ALL.into_iter().filter(|t| t.is_source()) {
        allow(
            &producer,
            Resource::Topic,
            n.topic(t),
            Pattern::Literal,
            Operation::Write,
        );
    }
    let analyst = n.principal("analyst");
    for t in Topic::ALL {
        allow(
            &analyst,
            Resource::Topic,
            n.topic(t),
            Pattern::Literal,
            Operation::Read,
        );
    }
    allow(
        &analyst,
        Resource::Group,
        format!("{}-", n.group_prefix),
        Pattern::Prefixed,
        Operation::Describe,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grants(acls: &[Acl], who: &str) -> Vec<String> {
        acls.iter()
            .filter(|a| a.principal == format!("User:{who}"))
            .map(|a| {
                format!(
                    "{:?} {:?} {}",
                    a.operation, a.resource_type, a.resource_name
                )
            })
            .collect()
    }

    #[test]
    fn each_principal_gets_exactly_its_share() {
        let acls = pipeline_acls(&Naming {
            topic_prefix: "novyra.",
            group_prefix: "novyra",
            principal_prefix: "novyra-",
        });
        assert_eq!(
            grants(&acls, "novyra-ingest"),
            [
                "Read Topic novyra.attempts",
                "Write Topic novyra.mastery",
                "Write Topic novyra.dlq",
                "Read Group novyra-ingest",
                "Describe Group novyra-reader"
            ]
        );
        assert_eq!(
            grants(&acls, "novyra-audit"),
            [
                "Read Topic novyra.evaluations",
                "Write Topic novyra.dlq",
                "Read Group novyra-audit",
                "Describe Group novyra-reader"
            ]
        );
        let producer = grants(&acls, "novyra-producer");
        assert!(producer.iter().all(|g| g.starts_with("Write Topic")));
        assert!(!producer
            .iter()
            .any(|g| g.ends_with("mastery") || g.ends_with("dlq")));
        let analyst = grants(&acls, "novyra-analyst");
        assert!(!analyst
            .iter()
            .any(|g| g.starts_with("Write") || g.starts_with("Read Group")));
        assert!(analyst.contains(&"Describe Group novyra-".to_owned()));
    }
}
