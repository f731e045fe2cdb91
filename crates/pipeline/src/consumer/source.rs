//! The poll thread: one OS thread per group worker owns the librdkafka
//! consumer's polling, so rebalance callbacks, synchronous commits and
//! seeks never block a tokio worker thread, and the member keeps polling
//! (and stays in its group) while its worker is stuck on a dependency.
//!
//! Records go to the worker through a bounded channel. When the worker
//! stops taking them for [`STALL_PAUSE`], the thread pauses every assigned
//! partition (librdkafka drops what it prefetched and resumes from the
//! last record handed out) and keeps calling `poll`, which serves the
//! group protocol without returning records; it resumes once the worker
//! has drained the backlog.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use novyra_kafka::rdkafka::config::ClientConfig;
use novyra_kafka::rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use novyra_kafka::rdkafka::error::KafkaError;
use novyra_kafka::rdkafka::message::{Message, OwnedMessage};
use novyra_kafka::rdkafka::{Offset, TopicPartitionList};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::context::{Ctx, Positions, Tp};
use crate::error::WorkerError;

/// Bounds of the records in flight between the poll thread and the worker.
const MIN_CHANNEL: usize = 1024;
const MAX_CHANNEL: usize = 65_536;
/// How long the worker may leave records waiting before the partitions
/// are paused.
pub const STALL_PAUSE: Duration = Duration::from_secs(2);
/// How long one `poll` may block: the latency of noticing shutdown.
const POLL: Duration = Duration::from_millis(100);

/// A record and the epoch of its partition when it was polled.
struct Polled {
    msg: OwnedMessage,
    epoch: u64,
}

type Shared = Arc<Mutex<Positions>>;

fn lock(p: &Shared) -> std::sync::MutexGuard<'_, Positions> {
    p.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A group member's records, polled on its own thread.
pub struct Source {
    rx: mpsc::Receiver<Polled>,
    /// `None` only once closed.
    consumer: Option<Arc<BaseConsumer<Ctx>>>,
    positions: Shared,
    thread: Option<JoinHandle<()>>,
    stop: CancellationToken,
}

impl Source {
    /// Creates the consumer with `ctx`, subscribes to `topics` and starts
    /// the poll thread.
    /// `capacity` bounds the records in flight to the worker (take about
    /// two batches).
    pub fn start(
        config: &ClientConfig,
        ctx: Ctx,
        topics: &[&str],
        capacity: usize,
    ) -> Result<Self, KafkaError> {
        let positions = ctx.positions.clone();
        let consumer: Arc<BaseConsumer<Ctx>> = Arc::new(config.create_with_context(ctx)?);
        consumer.subscribe(topics)?;
        let (tx, rx) = mpsc::channel(capacity.clamp(MIN_CHANNEL, MAX_CHANNEL));
        let stop = CancellationToken::new();
        let thread = {
            let consumer = consumer.clone();
            let positions = positions.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("kafka-poll".into())
                .spawn(move || Poller::new(consumer, positions, tx, stop).run())
                .map_err(|e| KafkaError::Subscription(format!("starting the poll thread: {e}")))?
        };
        Ok(Self {
            rx,
            consumer: Some(consumer),
            positions,
            thread: Some(thread),
            stop,
        })
    }

    /// Waits for the first record (at most 500 ms, or until `stop`), then
    /// keeps taking records until `max` or `linger` has passed. Records of
    /// a partition repositioned since they were polled are dropped. Fails
    /// if the poll thread has died, so the worker stops loudly instead of
    /// waiting for records that never come.
    pub async fn next_batch(
        &mut self,
        max: usize,
        linger: Duration,
        stop: &CancellationToken,
    ) -> Result<Vec<OwnedMessage>, WorkerError> {
        let mut got: Vec<Polled> = Vec::new();
        let first = tokio::select! {
            m = self.rx.recv() => m,
            _ = stop.cancelled() => return Ok(Vec::new()),
            _ = tokio::time::sleep(Duration::from_millis(500)) => return Ok(Vec::new()),
        };
        match first {
            Some(p) => got.push(p),
            None => return Err(WorkerError::PollThread),
        }
        let deadline = tokio::time::Instant::now() + linger;
        while got.len() < max {
            // Take what is already there without waiting, then linger.
            match self.rx.try_recv() {
                Ok(p) => got.push(p),
                Err(_) => match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                    Ok(Some(p)) => got.push(p),
                    _ => break,
                },
            }
        }
        let pos = lock(&self.positions);
        Ok(got
            .into_iter()
            .filter(|p| pos.current(p.msg.topic(), p.msg.partition(), p.epoch))
            .map(|p| p.msg)
            .collect())
    }

    /// Stores "next offset" = last offset + 1 for every partition in
    /// `msgs`, for auto-commit. Call only after the downstream commit.
    pub fn store_offsets(&self, msgs: &[OwnedMessage]) {
        let mut next: HashMap<(&str, i32), i64> = HashMap::new();
        for m in msgs {
            let e = next.entry((m.topic(), m.partition())).or_insert(0);
            *e = (*e).max(m.offset() + 1);
        }
        let mut tpl = TopicPartitionList::new();
        for ((t, p), o) in next {
            let _ = tpl.add_partition_offset(t, p, Offset::Offset(o));
        }
        // NB: a local, non-blocking call.
        if let Err(e) = self.consumer().store_offsets(&tpl) {
            // Revoked partitions cannot be stored; their new owner carries on.
            tracing::debug!(error = %e, "storing offsets");
        }
    }

    /// Asks the poll thread to drop what it holds of `partition`, pause it,
    /// and start it again at the offset Postgres stores (for a worker
    /// fenced by another owner's commit).
    pub fn reposition(&self, topic: &str, partition: i32) {
        let mut pos = lock(&self.positions);
        let tp = (topic.to_owned(), partition);
        pos.bump(&tp);
        pos.reposition.insert(tp);
    }

    /// Increments on every assignment change.
    pub fn generation(&self) -> u64 {
        self.consumer().context().generation.load(Ordering::SeqCst)
    }

    fn consumer(&self) -> &BaseConsumer<Ctx> {
        self.consumer
            .as_deref()
            .expect("the consumer is only taken by close")
    }

    /// Stops the poll thread, which commits the stored offsets and leaves
    /// the group; waits for it off the async workers.
    pub async fn close(mut self) {
        self.stop.cancel();
        let thread = self.thread.take();
        let consumer = self.consumer.take();
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(t) = thread {
                let _ = t.join();
            }
            drop(consumer);
        })
        .await;
    }
}

impl Drop for Source {
    fn drop(&mut self) {
        self.stop.cancel();
        // NB: destroying a consumer blocks; whoever drops the last handle
        // must not be an async worker thread.
        if let Some(c) = self.consumer.take() {
            let _ = std::thread::Builder::new()
                .name("kafka-close".into())
                .spawn(move || drop(c));
        }
    }
}

/// The poll thread's state.
struct Poller {
    consumer: Arc<BaseConsumer<Ctx>>,
    positions: Shared,
    tx: mpsc::Sender<Polled>,
    stop: CancellationToken,
    /// Polled, not yet accepted by the channel.
    backlog: VecDeque<Polled>,
    /// When the backlog last was empty.
    flowing_since: Instant,
    /// Paused because the worker is not taking records.
    stalled: bool,
    /// When to ask Postgres again for unpositioned partitions.
    next_try: Instant,
    backoff: Duration,
}

impl Poller {
    fn new(
        consumer: Arc<BaseConsumer<Ctx>>,
        positions: Shared,
        tx: mpsc::Sender<Polled>,
        stop: CancellationToken,
    ) -> Self {
        Self {
            consumer,
            positions,
            tx,
            stop,
            backlog: VecDeque::new(),
            flowing_since: Instant::now(),
            stalled: false,
            next_try: Instant::now(),
            backoff: Duration::from_millis(500),
        }
    }

    fn run(mut self) {
        while !self.stop.is_cancelled() && !self.tx.is_closed() {
            self.hand_over();
            self.take_reposition_requests();
            self.position_waiting();
            let stalled = !self.backlog.is_empty() && self.flowing_since.elapsed() >= STALL_PAUSE;
            let changed = std::mem::take(&mut lock(&self.positions).changed);
            if stalled != self.stalled || changed {
                if stalled != self.stalled {
                    tracing::info!(
                        stalled,
                        backlog = self.backlog.len(),
                        "worker backlog: {}",
                        if stalled {
                            "pausing fetches"
                        } else {
                            "resuming fetches"
                        }
                    );
                }
                self.stalled = stalled;
                self.apply_pauses();
            }
            let wait = if self.backlog.is_empty() {
                POLL
            } else {
                Duration::ZERO
            };
            match self.consumer.poll(wait) {
                Some(Ok(m)) => {
                    let msg = m.detach();
                    let epoch = lock(&self.positions).epoch(msg.topic(), msg.partition());
                    self.backlog.push_back(Polled { msg, epoch });
                }
                Some(Err(e)) => tracing::warn!(error = %e, "consumer error"),
                None => {}
            }
        }
        // NB: offsets stored after the last committed batches; a final
        // synchronous commit spares the next owner from redoing them.
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "final commit");
        }
        self.consumer.unsubscribe();
    }

    /// Moves the backlog into the channel; waits briefly for room when
    /// the channel is full, so a stalled worker does not make this spin.
    fn hand_over(&mut self) {
        while let Some(p) = self.backlog.pop_front() {
            match self.tx.try_send(p) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(p)) => {
                    self.backlog.push_front(p);
                    std::thread::sleep(Duration::from_millis(10));
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return,
            }
        }
        self.flowing_since = Instant::now();
    }

    /// Fenced partitions: forget what was polled of them and hold them
    /// until they are positioned from Postgres again.
    fn take_reposition_requests(&mut self) {
        let mut pos = lock(&self.positions);
        if pos.reposition.is_empty() {
            return;
        }
        let asked = std::mem::take(&mut pos.reposition);
        self.backlog
            .retain(|p| !asked.contains(&(p.msg.topic().to_owned(), p.msg.partition())));
        // A partition revoked since the worker asked is the new owner's.
        let assigned = self.assigned();
        pos.unpositioned.extend(
            asked
                .into_iter()
                .filter(|tp| assigned.as_ref().is_none_or(|a| a.contains(tp))),
        );
        pos.changed = true;
        self.next_try = Instant::now();
    }

    /// Seeks unpositioned partitions to their Postgres offsets once it
    /// answers, with backoff while it does not.
    fn position_waiting(&mut self) {
        let waiting: Vec<Tp> = {
            let mut pos = lock(&self.positions);
            if pos.unpositioned.is_empty() || Instant::now() < self.next_try {
                return;
            }
            if let Some(assigned) = self.assigned() {
                pos.unpositioned.retain(|tp| assigned.contains(tp));
            }
            pos.unpositioned.iter().cloned().collect()
        };
        let Some(start) = self.consumer.context().start.clone() else {
            // Nothing to position from: Kafka's committed offset it is.
            let mut pos = lock(&self.positions);
            pos.unpositioned.clear();
            pos.changed = true;
            return;
        };
        let topics: BTreeSet<&str> = waiting.iter().map(|(t, _)| t.as_str()).collect();
        let mut done = Vec::new();
        for topic in topics {
            let stored = match start.read(topic) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(topic, error = %e, retry_in_ms = self.backoff.as_millis() as u64, "postgres offsets still unavailable; partitions stay paused");
                    self.next_try = Instant::now() + self.backoff;
                    self.backoff = (self.backoff * 2).min(Duration::from_secs(10));
                    return;
                }
            };
            for (t, p) in waiting.iter().filter(|(t, _)| t == topic) {
                let at = stored
                    .get(p)
                    .map_or(Offset::Beginning, |&o| Offset::Offset(o));
                // A seek on a paused partition sets where it fetches from on resume.
                match self.consumer.seek(t, *p, at, Duration::from_secs(10)) {
                    Ok(()) => {
                        tracing::info!(topic = %t, partition = p, at = ?at, "positioned at the offset stored in postgres");
                        done.push((t.clone(), *p));
                    }
                    Err(e) => {
                        tracing::warn!(topic = %t, partition = p, error = %e, "seek failed; will retry");
                        self.next_try = Instant::now() + self.backoff;
                    }
                }
            }
        }
        self.backoff = Duration::from_millis(500);
        let mut pos = lock(&self.positions);
        for tp in &done {
            pos.unpositioned.remove(tp);
            pos.bump(tp);
        }
        pos.changed = true;
        drop(pos);
        self.backlog
            .retain(|p| !done.contains(&(p.msg.topic().to_owned(), p.msg.partition())));
    }

    /// The current assignment (a local call); `None` if librdkafka cannot
    /// say, and then nothing is forgotten or resumed on its account.
    fn assigned(&self) -> Option<BTreeSet<Tp>> {
        self.consumer.assignment().ok().map(|l| {
            l.elements()
                .iter()
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect()
        })
    }

    /// Pauses what must not fetch (everything while the worker stalls,
    /// unpositioned partitions always) and resumes the rest. Pause flags
    /// outlive an assignment in librdkafka, so this runs after every
    /// rebalance too.
    fn apply_pauses(&mut self) {
        let Some(assigned) = self.assigned() else {
            return;
        };
        // Records of partitions no longer ours are the new owner's.
        self.backlog
            .retain(|p| assigned.contains(&(p.msg.topic().to_owned(), p.msg.partition())));
        let hold: BTreeSet<Tp> = {
            let pos = lock(&self.positions);
            assigned
                .iter()
                .filter(|tp| self.stalled || pos.unpositioned.contains(*tp))
                .cloned()
                .collect()
        };
        let resume: Vec<&Tp> = assigned.iter().filter(|tp| !hold.contains(*tp)).collect();
        let list = |tps: &mut dyn Iterator<Item = &Tp>| {
            let mut l = TopicPartitionList::new();
            for (t, p) in tps {
                l.add_partition(t, *p);
            }
            l
        };
        if !hold.is_empty() {
            if let Err(e) = self.consumer.pause(&list(&mut hold.iter())) {
                tracing::warn!(error = %e, "pausing partitions");
            }
        }
        if !resume.is_empty() {
            if let Err(e) = self.consumer.resume(&list(&mut resume.into_iter())) {
                tracing::warn!(error = %e, "resuming partitions");
            }
        }
    }
}
