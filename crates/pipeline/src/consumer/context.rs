//! The consumer context: what happens inside librdkafka's callbacks, which
//! all run on the poll thread (see [`super::source`]).
//!
//! # The rebalance protocol
//!
//! Groups use `cooperative-sticky`: a rebalance hands out or takes away
//! only the partitions that move, and librdkafka calls
//! `rebalance` → [`ConsumerContext::pre_rebalance`] → incremental
//! assign/unassign → [`ConsumerContext::post_rebalance`] from inside
//! `poll`, on the poll thread, never on a tokio worker.
//!
//! - **Assign.** For a worker whose progress lives in Postgres (ingest: the
//!   next offset per partition is written in the same transaction as the
//!   rows), `pre_rebalance` reads those offsets and writes them into the
//!   assignment list, so librdkafka starts fetching exactly there. Kafka's
//!   committed offset is only a hint: it trails Postgres (it is stored after
//!   the commit) or leads it (a restored database). Reading Postgres is
//!   bounded by [`POSITION_TIMEOUT`]; if Postgres does not answer, the new
//!   partitions are assigned *paused* (in `post_rebalance`) and left
//!   "unpositioned": the poll thread keeps polling, so the member stays in
//!   the group however long the outage, and seeks and resumes them once
//!   Postgres answers. Workers whose progress lives in Kafka (catalog,
//!   graph; their writes are idempotent) start at the committed offset.
//! - **Revoke.** Offsets stored so far belong to finished batches; they are
//!   committed synchronously so the next owner does not redo them.
//! - **Epochs.** Every (re)positioning of a partition (assign, revoke, a
//!   seek after a fence) bumps its epoch. Records polled under an older
//!   epoch, still buffered on their way to the worker, are dropped before
//!   the worker sees them, and a partition waiting to be (re)positioned
//!   passes nothing (what is polled before its seek still comes from the
//!   old position), so within one epoch a partition's records arrive in
//!   offset order from where it was positioned.
//! - **Zombies.** A member that lost a partition without noticing yet can
//!   still try to write it. Ingest's batch transaction checks that the
//!   stored offset is still the one the batch started from (the fence);
//!   a fenced worker asks for the partition to be repositioned from
//!   Postgres ([`super::Source::reposition`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use novyra_kafka::rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance,
};
use novyra_kafka::rdkafka::statistics::Statistics;
use novyra_kafka::rdkafka::{ClientContext, Offset, TopicPartitionList};
use novyra_store::Store;

use crate::Health;

/// How long an assignment waits for Postgres before it leaves the new
/// partitions paused and unpositioned (well below `max.poll.interval.ms`).
pub const POSITION_TIMEOUT: Duration = Duration::from_secs(5);

/// A topic partition.
pub type Tp = (String, i32);

/// Where a worker's partitions start when they are assigned to it: the
/// next offsets a worker keeps in Postgres, next to its data.
#[derive(Clone)]
pub struct PostgresStart {
    /// The store holding the offsets.
    pub store: Store,
    /// The consumer group whose offsets these are.
    pub group: String,
    /// The runtime that drives the store's futures from the poll thread.
    pub runtime: tokio::runtime::Handle,
}

impl PostgresStart {
    /// The stored next offsets of `topic`, if Postgres answers in time.
    pub(crate) fn read(&self, topic: &str) -> Result<HashMap<i32, i64>, String> {
        let read = self.store.stored_offsets(&self.group, topic);
        // NB: the timer must be made inside the runtime, not on this thread.
        let read = async { tokio::time::timeout(POSITION_TIMEOUT, read).await };
        match self.runtime.block_on(read) {
            Ok(Ok(m)) => Ok(m),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {POSITION_TIMEOUT:?}")),
        }
    }
}

/// State shared by the poll thread (writer) and the worker (reader).
#[derive(Default)]
pub(crate) struct Positions {
    /// Bumped on every (re)positioning of a partition.
    pub epochs: HashMap<Tp, u64>,
    /// Assigned, paused, and waiting for their Postgres offsets.
    pub unpositioned: BTreeSet<Tp>,
    /// Partitions a fenced worker wants repositioned from Postgres.
    pub reposition: BTreeSet<Tp>,
    /// Set by the callbacks: the poll thread must recompute pauses.
    pub changed: bool,
}

impl Positions {
    pub(crate) fn bump(&mut self, tp: &Tp) {
        *self.epochs.entry(tp.clone()).or_insert(0) += 1;
    }

    /// Whether records of a partition polled under `epoch` may reach the
    /// worker: the epoch is current and the partition is not waiting to be
    /// (re)positioned. Records polled between a reposition request and its
    /// seek carry the current epoch but come from the old position, so a
    /// partition on hold passes nothing until the seek bumps its epoch.
    pub(crate) fn current(&self, topic: &str, partition: i32, epoch: u64) -> bool {
        if epoch != self.epoch(topic, partition) {
            return false;
        }
        if self.unpositioned.is_empty() && self.reposition.is_empty() {
            return true;
        }
        let tp = (topic.to_owned(), partition);
        !self.unpositioned.contains(&tp) && !self.reposition.contains(&tp)
    }

    pub(crate) fn epoch(&self, topic: &str, partition: i32) -> u64 {
        // NB: allocation-free lookup would need a borrowed key type; this
        // runs once per record of a batch, under one lock.
        self.epochs
            .get(&(topic.to_owned(), partition))
            .copied()
            .unwrap_or(0)
    }
}

/// Counts rebalances, positions assigned partitions (see the module docs)
/// and reports per-partition lag.
pub struct Ctx {
    /// Incremented on every assignment change.
    pub generation: Arc<AtomicU64>,
    pub(crate) positions: Arc<Mutex<Positions>>,
    pub(crate) start: Option<PostgresStart>,
    group: String,
    health: Health,
}

impl Ctx {
    /// A context for `group` that starts partitions at Kafka's committed
    /// offsets.
    pub fn new(group: &str, health: &Health) -> Self {
        health.metrics.init_group(group);
        Self {
            generation: Arc::new(AtomicU64::new(0)),
            positions: Arc::default(),
            start: None,
            group: group.to_owned(),
            health: health.clone(),
        }
    }

    /// Starts assigned partitions at the offsets `start` keeps instead.
    #[must_use]
    pub fn starting_from(mut self, start: PostgresStart) -> Self {
        self.start = Some(start);
        self
    }

    fn positions(&self) -> std::sync::MutexGuard<'_, Positions> {
        self.positions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes the Postgres offsets into a new assignment; returns the
    /// partitions it could not position.
    fn position(&self, start: &PostgresStart, tpl: &TopicPartitionList) -> Vec<Tp> {
        let mut topics: BTreeSet<String> = BTreeSet::new();
        for e in tpl.elements() {
            topics.insert(e.topic().to_owned());
        }
        let mut missed = Vec::new();
        for topic in topics {
            match start.read(&topic) {
                Ok(stored) => {
                    for e in tpl.elements_for_topic(&topic) {
                        let p = e.partition();
                        let at = stored
                            .get(&p)
                            .map_or(Offset::Beginning, |&o| Offset::Offset(o));
                        if let Some(mut elem) = tpl.find_partition(&topic, p) {
                            if elem.set_offset(at).is_err() {
                                missed.push((topic.clone(), p));
                                continue;
                            }
                        }
                        tracing::info!(group = %self.group, topic = %topic, partition = p, at = ?at, "starting at the offset stored in postgres");
                    }
                }
                Err(e) => {
                    tracing::warn!(group = %self.group, topic = %topic, error = %e, "postgres offsets unavailable; the new partitions wait paused until it answers");
                    self.health.set("postgres", Some(e));
                    for e in tpl.elements_for_topic(&topic) {
                        missed.push((topic.clone(), e.partition()));
                    }
                }
            }
        }
        missed
    }
}

impl ClientContext for Ctx {
    /// librdkafka's periodic statistics (`statistics.interval.ms`): the
    /// per-partition lag behind the last *stored* offset, i.e. records not
    /// yet committed downstream, without an extra broker request.
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition < 0 || p.consumer_lag_stored < 0 {
                    continue;
                }
                self.health
                    .metrics
                    .lag
                    .with_label_values(&[&self.group, topic, &partition.to_string()])
                    .set(p.consumer_lag_stored);
            }
        }
    }
}

impl ConsumerContext for Ctx {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                let missed = match &self.start {
                    Some(start) => self.position(start, tpl),
                    None => Vec::new(),
                };
                let mut pos = self.positions();
                for e in tpl.elements() {
                    pos.bump(&(e.topic().to_owned(), e.partition()));
                }
                pos.unpositioned.extend(missed);
                pos.changed = true;
            }
            Rebalance::Revoke(tpl) => {
                // NB: offsets stored so far belong to finished batches;
                // commit them so the next owner does not redo work
                // (correctness does not depend on it).
                if tpl.count() > 0 {
                    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
                        tracing::debug!(group = %self.group, error = %e, "commit on revoke");
                    }
                }
                let mut pos = self.positions();
                for e in tpl.elements() {
                    let tp = (e.topic().to_owned(), e.partition());
                    pos.bump(&tp);
                    pos.unpositioned.remove(&tp);
                    pos.reposition.remove(&tp);
                }
                pos.changed = true;
            }
            Rebalance::Error(_) => {}
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.health
            .metrics
            .rebalances
            .with_label_values(&[&self.group])
            .inc();
        match rebalance {
            Rebalance::Assign(tpl) => {
                // Unpositioned partitions must not fetch from Kafka's
                // committed offset: hold them until Postgres answers.
                let hold = {
                    let pos = self.positions();
                    let mut hold = TopicPartitionList::new();
                    for e in tpl.elements() {
                        if pos
                            .unpositioned
                            .contains(&(e.topic().to_owned(), e.partition()))
                        {
                            hold.add_partition(e.topic(), e.partition());
                        }
                    }
                    hold
                };
                if hold.count() > 0 {
                    if let Err(e) = consumer.pause(&hold) {
                        tracing::error!(group = %self.group, error = %e, "could not pause unpositioned partitions");
                    }
                }
                tracing::info!(group = %self.group, partitions = tpl.count(), "partitions assigned")
            }
            Rebalance::Revoke(tpl) => {
                // A revoked partition's lag is its new owner's to report.
                for e in tpl.elements() {
                    let _ = self.health.metrics.lag.remove_label_values(&[
                        &self.group,
                        e.topic(),
                        &e.partition().to_string(),
                    ]);
                }
                tracing::info!(group = %self.group, partitions = tpl.count(), "partitions revoked")
            }
            Rebalance::Error(e) => {
                tracing::warn!(group = %self.group, error = %e, "rebalance error")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_on_hold_or_repositioned_passes_nothing_old() {
        let mut pos = Positions::default();
        let tp: Tp = ("t".into(), 3);
        pos.bump(&tp);
        let polled = pos.epoch("t", 3);
        assert!(pos.current("t", 3, polled));
        // A fenced worker asks for a reposition: what was polled at the
        // current epoch may come from the old position.
        pos.reposition.insert(tp.clone());
        assert!(!pos.current("t", 3, polled));
        pos.reposition.remove(&tp);
        pos.unpositioned.insert(tp.clone());
        assert!(!pos.current("t", 3, polled));
        assert!(
            pos.current("t", 4, pos.epoch("t", 4)),
            "other partitions flow"
        );
        // The seek: off hold, a new epoch; only records polled after it pass.
        pos.unpositioned.remove(&tp);
        pos.bump(&tp);
        assert!(!pos.current("t", 3, polled));
        assert!(pos.current("t", 3, pos.epoch("t", 3)));
    }
}
