//! The `novyra-catalog` group: concepts and prerequisites → Postgres. Also
//! home of the decoding of catalog records, shared with the graph sink.

use std::time::{Duration, Instant};

use novyra_core::{keys, validate, ConceptUpserted, MasteryUpdated, PrerequisiteLinked};
use novyra_kafka::rdkafka::consumer::Consumer;
use novyra_kafka::rdkafka::message::{Message, OwnedMessage};
use novyra_registry::{Codec, EventKind};
use novyra_store::catalog::CatalogChange;
use novyra_store::{Store, StoreError};
use tokio_util::sync::CancellationToken;

use crate::consumer::{
    key_str, next_batch, send_to_dlq, store_offsets, Ctx, PipelineConsumer, Refused,
};
use crate::health::retry;
use crate::run::WorkerError;
use crate::{Config, Health};

/// Consumer group suffix: the group is `<prefix>-catalog` (`novyra-catalog`).
pub const GROUP: &str = "catalog";

/// A decoded record of a compacted topic: a value or a tombstone.
#[derive(Debug, Clone)]
pub enum Change {
    /// Concept upserted.
    Concept(ConceptUpserted),
    /// Concept tombstone.
    ConceptDeleted(String),
    /// Link made.
    Link(PrerequisiteLinked),
    /// Link tombstone.
    Unlink(String, String),
    /// Mastery update.
    Mastery(MasteryUpdated),
    /// Mastery tombstone.
    MasteryDeleted(String, String),
}

/// Decodes and validates a record of the concepts, prerequisites or mastery
/// topic. Outer error: the registry is gone for good (or shutdown); inner
/// error: the record is refused.
pub async fn decode_change(
    cfg: &Config,
    codec: &Codec,
    health: &Health,
    stop: &CancellationToken,
    m: &OwnedMessage,
) -> Result<Result<Change, Refused>, WorkerError> {
    let refuse = |stage, class, message: String| {
        Ok(Err(Refused {
            msg: m.clone(),
            stage,
            class,
            message,
        }))
    };
    let Some(kind) = EventKind::from_topic(&cfg.topic_prefix, m.topic()) else {
        return refuse(
            "decode",
            "unknown_topic",
            format!("no event kind for topic {}", m.topic()),
        );
    };
    let key = key_str(m);
    let Some(payload) = m.payload() else {
        return match (kind, key) {
            (EventKind::Concept, Some(k)) if !k.is_empty() => {
                Ok(Ok(Change::ConceptDeleted(k.to_owned())))
            }
            (EventKind::Prerequisite, Some(k)) => match keys::parse_prerequisite_key(k) {
                Some((a, b)) => Ok(Ok(Change::Unlink(a.to_owned(), b.to_owned()))),
                None => refuse(
                    "validate",
                    "invalid_key",
                    format!("tombstone key {k:?} is not prerequisite>concept"),
                ),
            },
            (EventKind::Mastery, Some(k)) => match keys::parse_mastery_key(k) {
                Some((a, b)) => Ok(Ok(Change::MasteryDeleted(a.to_owned(), b.to_owned()))),
                None => refuse(
                    "validate",
                    "invalid_key",
                    format!("tombstone key {k:?} is not user/concept"),
                ),
            },
            _ => refuse(
                "validate",
                "unexpected_tombstone",
                "tombstone without a usable key".into(),
            ),
        };
    };
    macro_rules! dec {
        ($t:ty) => {{
            let r = retry(
                health,
                "registry",
                stop,
                |e: &novyra_registry::DecodeError| e.is_retryable(),
                || codec.decode::<$t>(kind, payload),
            )
            .await;
            match r {
                Ok(d) => d.value,
                Err(e) if e.is_retryable() => return Err(WorkerError::Shutdown),
                Err(e) => return refuse("decode", e.kind(), e.to_string()),
            }
        }};
    }
    let checked = match kind {
        EventKind::Concept => {
            let v = dec!(ConceptUpserted);
            validate::concept(&v)
                .and_then(|_| validate::key_matches(key, &v.concept_id))
                .map(|_| Change::Concept(v))
        }
        EventKind::Prerequisite => {
            let v = dec!(PrerequisiteLinked);
            let k = keys::prerequisite_key(&v.prerequisite_id, &v.concept_id);
            validate::prerequisite(&v)
                .and_then(|_| validate::key_matches(key, &k))
                .map(|_| Change::Link(v))
        }
        EventKind::Mastery => {
            let v = dec!(MasteryUpdated);
            let k = keys::mastery_key(&v.user_id, &v.concept_id);
            validate::mastery(&v)
                .and_then(|_| validate::key_matches(key, &k))
                .map(|_| Change::Mastery(v))
        }
        EventKind::Attempt => {
            return refuse(
                "decode",
                "unexpected_topic",
                "attempts are not catalog records".into(),
            )
        }
    };
    match checked {
        Ok(c) => Ok(Ok(c)),
        Err(e) => refuse("validate", "invalid_event", e.to_string()),
    }
}

/// Runs the catalog worker until `stop`.
pub async fn run(
    cfg: &Config,
    health: &Health,
    stop: CancellationToken,
) -> Result<(), WorkerError> {
    let group = cfg.group(GROUP);
    let group = group.as_str();
    let store = Store::new(&cfg.store())?;
    let codec = Codec::new(&cfg.registry())?;
    let producer = cfg.kafka().producer()?;
    let dlq_topic = cfg.topic("dlq");
    let consumer: PipelineConsumer = cfg
        .kafka()
        .consumer_config(group)
        .create_with_context(Ctx::new(group, health))?;
    let topics = [cfg.topic("concepts"), cfg.topic("prerequisites")];
    consumer.subscribe(&[&topics[0], &topics[1]])?;
    tracing::info!(group, "catalog worker started");
    let linger = Duration::from_millis(cfg.pipeline.batch_linger_ms);
    while !stop.is_cancelled() {
        let msgs = next_batch(&consumer, cfg.pipeline.max_batch, linger, &stop).await;
        if msgs.is_empty() {
            continue;
        }
        health
            .consumed
            .with_label_values(&[group])
            .inc_by(msgs.len() as u64);
        let mut changes = Vec::with_capacity(msgs.len());
        let mut refused = Vec::new();
        for m in &msgs {
            match decode_change(cfg, &codec, health, &stop, m).await? {
                Ok(Change::Concept(c)) => changes.push(CatalogChange::Concept(c)),
                Ok(Change::ConceptDeleted(id)) => changes.push(CatalogChange::ConceptDeleted(id)),
                Ok(Change::Link(l)) => changes.push(CatalogChange::Link(l)),
                Ok(Change::Unlink(a, b)) => changes.push(CatalogChange::Unlink(a, b)),
                Ok(Change::Mastery(_) | Change::MasteryDeleted(..)) => {}
                Err(r) => refused.push(r),
            }
        }
        if !refused.is_empty() {
            send_to_dlq(&producer, &dlq_topic, group, &refused, health, &stop).await?;
        }
        let started = Instant::now();
        retry(health, "postgres", &stop, StoreError::is_retryable, || {
            store.apply_catalog(&changes)
        })
        .await?;
        health
            .batch_seconds
            .with_label_values(&[group])
            .observe(started.elapsed().as_secs_f64());
        health
            .committed
            .with_label_values(&[group])
            .inc_by(changes.len() as u64);
        store_offsets(&consumer, &msgs);
    }
    let _ = consumer.commit_consumer_state(novyra_kafka::rdkafka::consumer::CommitMode::Sync);
    Ok(())
}
