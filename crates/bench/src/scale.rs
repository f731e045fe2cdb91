//! `make bench-scale` (issue 11, target 3): ten million attempts from a
//! million students over five thousand concepts through one `novyra run`
//! (every group), to show that nothing slows down or grows as the tables,
//! the indexes and the graph get large.
//!
//! The curriculum goes in first (a short `novyra run` that takes in the
//! concepts and stops), then every attempt is preloaded on the topic and a
//! fresh `novyra run` drains the backlog. Sampling the run's own metrics
//! once a second gives, per million attempts, the ingest's rate, the graph
//! sink's rate over the same million mastery records, and the process's
//! resident memory; at the end the stored rows, partitions, on-disk size
//! and graph are counted and checked against what was published.
//!
//! Not part of `make bench` or `make test`: it takes about 20 minutes and
//! 8 GiB of Postgres on a 2-core machine.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use neo4rs::query;
use novyra_core::{ConceptAttempted, Topic};
use novyra_pipeline::loadgen::{self, LoadgenOptions};
use novyra_pipeline::{CancellationToken, Config};
use novyra_registry::{Codec, EventKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::measure::{self, Options, Worker};
use crate::metrics::scrape;

/// Sizes of the scale benchmark.
#[derive(clap::Args, Debug, Clone)]
pub struct ScaleOptions {
    /// Attempts pushed through the pipeline.
    #[arg(long, default_value_t = 10_000_000)]
    scale_attempts: usize,
    /// Students; each attempts in rounds, one attempt per student a round.
    #[arg(long, default_value_t = 1_000_000)]
    scale_users: usize,
    /// Concepts in the curriculum.
    #[arg(long, default_value_t = 5_000)]
    scale_concepts: usize,
    /// Rows of the report: the run cut into this many equal shares (ten
    /// shares of a million attempts by default).
    #[arg(long, default_value_t = 10)]
    scale_shares: usize,
}

/// Rounds a student spends on one concept before moving to the next.
const ROUNDS_PER_CONCEPT: usize = 2;

/// The attempts, generated a slice at a time so the benchmark's own memory
/// does not grow with the run. Attempt `i` belongs to round `i / users`;
/// within a round the students come in a scrambled order (a stride
/// coprime with the student count), so every batch touches many students
/// and partitions, as live traffic would.
struct Load<'a> {
    prefix: &'a str,
    users: usize,
    concepts: usize,
    /// Steps through the students in a scrambled order; coprime with
    /// `users`, so a round still holds every student once.
    stride: usize,
    start_ms: i64,
    round_ms: i64,
}

impl<'a> Load<'a> {
    fn new(prefix: &'a str, s: &ScaleOptions, now_ms: i64) -> Self {
        let users = s.scale_users.max(1);
        let rounds = s.scale_attempts.div_ceil(users).max(1);
        // A year back, every round at least a day after the last, and the
        // last one a month before now: attempts fill about a dozen month
        // partitions and none lies in the future.
        let span = 335 * 86_400_000_i64;
        Load {
            prefix,
            users,
            concepts: s.scale_concepts.max(1),
            stride: (users / 2 + 1..).find(|k| gcd(*k, users) == 1).unwrap_or(1),
            start_ms: now_ms - 365 * 86_400_000,
            round_ms: (span / rounds as i64).max(86_400_000),
        }
    }

    /// The student of attempt `i`, as an index.
    fn student(&self, i: usize) -> usize {
        (i % self.users) * self.stride % self.users
    }

    /// The concept a student attempts in a round: each starts somewhere
    /// of its own and moves on every [`ROUNDS_PER_CONCEPT`] rounds.
    fn concept(&self, student: usize, round: usize) -> usize {
        (student * 7 + round / ROUNDS_PER_CONCEPT) % self.concepts
    }

    /// Distinct (student, concept) pairs in `n` attempts: the mastery rows
    /// and `MASTERED_BY` edges the run must end with. `rest` students have
    /// one round more than the others.
    fn pairs(&self, n: usize) -> usize {
        let (full, rest) = (n / self.users, n % self.users);
        let distinct = |rounds: usize| rounds.div_ceil(ROUNDS_PER_CONCEPT).min(self.concepts);
        rest * distinct(full + 1) + (self.users - rest) * distinct(full)
    }

    /// Attempts `from..to`, keyed by student.
    fn slice(
        &self,
        from: usize,
        to: usize,
        concept_ids: &[String],
    ) -> Vec<(String, ConceptAttempted)> {
        let mut rng = StdRng::seed_from_u64(from as u64 ^ 0x5ca1e);
        (from..to)
            .map(|i| {
                let round = i / self.users;
                let s = self.student(i);
                let user = format!("{}u{s:07}", self.prefix);
                // Students get better at a concept the longer they stay.
                let p = 0.45 + 0.25 * (round % ROUNDS_PER_CONCEPT) as f64;
                let a = ConceptAttempted {
                    event_id: uuid::Builder::from_random_bytes(rng.random())
                        .into_uuid()
                        .to_string(),
                    user_id: user.clone(),
                    concept_id: concept_ids[self.concept(s, round)].clone(),
                    occurred_at: self.start_ms
                        + round as i64 * self.round_ms
                        + (s as i64 * 60_000) % (self.round_ms / 2),
                    correct: rng.random_bool(p),
                    hints_used: i32::from(rng.random_bool(0.15)),
                    duration_ms: rng.random_range(5_000..180_000),
                    rubric: None,
                };
                (user, a)
            })
            .collect()
    }
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// One row of the report: the `k`th step of attempts.
#[derive(Debug, Default, Clone)]
struct Step {
    /// Seconds the ingest took for this step's attempts.
    ingest_s: f64,
    /// Seconds the graph sink took for as many mastery records.
    graph_s: f64,
    /// Resident memory of `novyra run` when the ingest finished the step.
    rss_mib: f64,
}

/// What the run ended with.
#[derive(Debug, Default)]
struct Outcome {
    publish_rate: f64,
    steps: Vec<Step>,
    ingest_rate: f64,
    /// Mastery records the graph sink committed: fewer than the attempts
    /// where one ingest batch held several attempts of the same key.
    graph_records: f64,
    graph_rate: f64,
    drain_s: f64,
    peak_rss_mib: f64,
    attempts: i64,
    mastery_rows: i64,
    partitions: usize,
    pg_bytes: i64,
    users: i64,
    edges: i64,
    pairs: usize,
}

/// Runs the scale benchmark and prints its report.
pub async fn run(
    base: &Config,
    o: &Options,
    novyra: &Path,
    me: &Path,
    stamp: &str,
) -> anyhow::Result<()> {
    let s = &o.scale;
    ensure!(
        s.scale_shares > 0 && s.scale_attempts >= s.scale_shares,
        "--scale-shares must be positive and at most --scale-attempts"
    );
    let cfg = measure::prefixed(base, &format!("{stamp}s"));
    let p = measure::id_prefix(&cfg);
    measure::setup(&cfg).await?;
    let result = measure_scale(&cfg, s, &p, novyra, me).await;
    measure::cleanup_with_graph(&cfg, o.keep).await;
    let r = result?;
    report(s, &r);
    Ok(())
}

fn report(s: &ScaleOptions, r: &Outcome) {
    let steps = r.steps.len().max(1) as f64;
    let step = s.scale_attempts as f64 / steps;
    let records = r.graph_records / steps;
    let ingest_rate = |st: &Step| step / st.ingest_s.max(1e-3);
    let graph_rate = |st: &Step| records / st.graph_s.max(1e-3);
    println!();
    println!(
        "| `novyra run`: {} attempts, {} students, {} concepts | ingest s | attempts/s | graph s | mastery records/s | RSS MiB at its end |",
        s.scale_attempts, s.scale_users, s.scale_concepts
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (k, st) in r.steps.iter().enumerate() {
        println!(
            "| share {} of {} | {:.1} | {:.0} | {:.1} | {:.0} | {:.0} |",
            k + 1,
            r.steps.len(),
            st.ingest_s,
            ingest_rate(st),
            st.graph_s,
            graph_rate(st),
            st.rss_mib
        );
    }
    println!(
        "| all | {:.1} | {:.0} | {:.1} | {:.0} | peak {:.0} |",
        s.scale_attempts as f64 / r.ingest_rate.max(1e-3),
        r.ingest_rate,
        r.graph_records / r.graph_rate.max(1e-3),
        r.graph_rate,
        r.peak_rss_mib
    );
    println!();
    if let (Some(first), Some(last)) = (r.steps.first(), r.steps.last()) {
        println!(
            "last share at {:.0}% of the first for the ingest, {:.0}% for the graph sink (target >= 80%); RSS {:.0} -> {:.0} MiB, peak {:.0} MiB",
            100.0 * ingest_rate(last) / ingest_rate(first),
            100.0 * graph_rate(last) / graph_rate(first),
            first.rss_mib,
            last.rss_mib,
            r.peak_rss_mib
        );
    }
    println!(
        "published at {:.0} attempts/s before the run; drained in {:.1} s (start of `novyra run` to the graph caught up); the graph sink applied {:.0} mastery records",
        r.publish_rate, r.drain_s, r.graph_records
    );
    println!(
        "Postgres: {} attempts in {} month partitions, {} mastery rows, {:.2} GiB on disk (tables and indexes of the schema)",
        r.attempts,
        r.partitions,
        r.mastery_rows,
        r.pg_bytes as f64 / (1u64 << 30) as f64
    );
    println!(
        "Neo4j: {} students, {} MASTERED_BY edges ({} expected)",
        r.users, r.edges, r.pairs
    );
}

async fn measure_scale(
    cfg: &Config,
    s: &ScaleOptions,
    p: &str,
    novyra: &Path,
    me: &Path,
) -> anyhow::Result<Outcome> {
    let n = s.scale_attempts;
    let now = chrono::Utc::now().timestamp_millis();
    let load = Load::new(p, s, now);
    let mut out = Outcome {
        pairs: load.pairs(n),
        ..Outcome::default()
    };
    let codec = Codec::new(&cfg.registry())?;
    let producer = cfg.kafka().producer()?;

    // The curriculum, taken in by a short run, so no attempt meets an
    // unknown concept (that path is measured elsewhere: late_concept).
    let curriculum = loadgen::curriculum(
        &LoadgenOptions {
            concepts: load.concepts,
            domains: 8,
            students: 0,
            attempts: 0,
            seed: 42,
            rate: 0,
            days: 365,
            id_prefix: p.to_owned(),
        },
        now,
    );
    eprintln!("[bench] scale: {} concepts in", load.concepts);
    loadgen::publish_curriculum(cfg, &codec, &producer, &curriculum, true).await?;
    let concept_ids: Vec<String> = curriculum
        .concepts
        .iter()
        .map(|c| c.concept_id.clone())
        .collect();
    {
        let mut child = Worker::Pipeline.spawn(cfg, novyra, me)?;
        let groups = [
            cfg.group(novyra_pipeline::catalog::GROUP),
            cfg.group(novyra_pipeline::graph_sink::GROUP),
        ];
        novyra_pipeline::run::wait_caught_up(
            cfg,
            &groups,
            &CancellationToken::new(),
            Duration::from_secs(300),
        )
        .await;
        measure::check_alive(&mut child, Worker::Pipeline)?;
    }
    let concepts = graph_count(
        cfg,
        "MATCH (c:Concept) WHERE c.id STARTS WITH $p RETURN count(c) AS n",
        p,
    )
    .await?;
    ensure!(
        concepts == load.concepts as i64,
        "the graph holds {concepts} of the {} concepts after the curriculum run",
        load.concepts
    );

    // Every attempt on the topic before the measured run starts.
    eprintln!("[bench] scale: preloading {n} attempts");
    let started = Instant::now();
    let chunk = 500_000;
    for from in (0..n).step_by(chunk) {
        let items = load.slice(from, (from + chunk).min(n), &concept_ids);
        loadgen::publish(
            &codec,
            &producer,
            &cfg.topic(Topic::Attempts),
            EventKind::Attempt,
            &items,
            0,
            true,
        )
        .await?;
        eprintln!("[bench] scale: {} published", from + items.len());
    }
    out.publish_rate = n as f64 / started.elapsed().as_secs_f64();

    drain(cfg, s, novyra, me, &mut out).await?;
    count(cfg, p, &mut out).await?;
    ensure!(
        out.attempts == n as i64,
        "Postgres holds {} attempts, not {n}",
        out.attempts
    );
    ensure!(
        out.mastery_rows == out.pairs as i64 && out.edges == out.pairs as i64,
        "{} mastery rows and {} edges, not {} each",
        out.mastery_rows,
        out.edges,
        out.pairs
    );
    Ok(out)
}

/// Starts `novyra run` on the preloaded backlog and samples its metrics
/// until the graph has caught up with every attempt: the ingest committed
/// them all, the outbox is empty and the graph group has no lag.
async fn drain(
    cfg: &Config,
    s: &ScaleOptions,
    novyra: &Path,
    me: &Path,
    out: &mut Outcome,
) -> anyhow::Result<()> {
    let n = s.scale_attempts as f64;
    let ingest = cfg.group(novyra_pipeline::ingest::GROUP);
    let graph = cfg.group(novyra_pipeline::graph_sink::GROUP);
    let addr = cfg.pipeline.metrics_addr.clone();
    let store = novyra_store::Store::new(&cfg.migrate_store())?;

    eprintln!("[bench] scale: novyra run drains the backlog");
    let started = Instant::now();
    let deadline = started + Duration::from_secs(600 + s.scale_attempts as u64 / 1_000);
    let mut child = Worker::Pipeline.spawn(cfg, novyra, me)?;
    let mut samples = Vec::new();
    let mut next_log = Instant::now();
    loop {
        measure::check_alive(&mut child, Worker::Pipeline)?;
        if Instant::now() > deadline {
            bail!(
                "scale: not drained after {:?}: {:?}",
                deadline - started,
                samples.last()
            );
        }
        let Ok(m) = scrape(&addr).await else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let sample = Sample {
            secs: started.elapsed().as_secs_f64(),
            ingest: m.value(COMMITTED, &ingest),
            graph: m.value(COMMITTED, &graph),
            rss_mib: measure::rss_mib(&child),
        };
        samples.push(sample);
        if Instant::now() >= next_log {
            eprintln!(
                "[bench] scale: {:.0} s: ingest {:.0}, graph {:.0}, RSS {:.0} MiB",
                sample.secs, sample.ingest, sample.graph, sample.rss_mib
            );
            next_log = Instant::now() + Duration::from_secs(30);
        }
        if sample.ingest >= n && caught_up(cfg, &store, &graph).await? {
            out.drain_s = started.elapsed().as_secs_f64();
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    out.peak_rss_mib = measure::peak_rss_mib(&child);
    drop(child);
    out.steps = split(&samples, s.scale_shares);
    out.ingest_rate = overall(&samples, |x| x.ingest).1;
    (out.graph_records, out.graph_rate) = overall(&samples, |x| x.graph);
    Ok(())
}

/// One scrape of the running pipeline.
#[derive(Debug, Clone, Copy)]
struct Sample {
    secs: f64,
    ingest: f64,
    graph: f64,
    rss_mib: f64,
}

/// A counter of the samples (attempts or mastery records committed).
type Counter = fn(&Sample) -> f64;

/// When the counter first reached `v`.
fn reached(samples: &[Sample], f: Counter, v: f64) -> Option<f64> {
    samples.iter().find(|x| f(x) >= v).map(|x| x.secs)
}

/// When the counter started: the last sample before its first commit, so
/// process start and group joins are not counted as work.
fn began(samples: &[Sample], f: Counter) -> f64 {
    samples
        .iter()
        .take_while(|x| f(x) <= 0.0)
        .last()
        .or(samples.first())
        .map_or(0.0, |x| x.secs)
}

/// The counter's total and its rate from its start to when it reached it.
fn overall(samples: &[Sample], f: Counter) -> (f64, f64) {
    let total = samples.last().map_or(0.0, f);
    let end = reached(samples, f, total).unwrap_or(0.0);
    (total, total / (end - began(samples, f)).max(1e-3))
}

/// The run cut into `steps` equal shares of what the counter `f` ended at:
/// each share's seconds.
fn shares(samples: &[Sample], f: Counter, steps: usize) -> Vec<f64> {
    let total = samples.last().map_or(0.0, f);
    let bound = |k: usize| total * k as f64 / steps as f64;
    (0..steps)
        .map(|k| {
            let from = if k == 0 {
                Some(began(samples, f))
            } else {
                reached(samples, f, bound(k))
            };
            match (from, reached(samples, f, bound(k + 1))) {
                (Some(a), Some(b)) => b - a,
                _ => f64::NAN,
            }
        })
        .collect()
}

/// Per share of the run: the ingest's and the graph sink's seconds, and
/// the memory when the ingest finished the share.
fn split(samples: &[Sample], steps: usize) -> Vec<Step> {
    let ingest: Counter = |x| x.ingest;
    let total = samples.last().map_or(0.0, ingest);
    let rss = |k: usize| {
        samples
            .iter()
            .find(|x| x.ingest >= total * (k + 1) as f64 / steps as f64)
            .map_or(f64::NAN, |x| x.rss_mib)
    };
    shares(samples, ingest, steps)
        .into_iter()
        .zip(shares(samples, |x| x.graph, steps))
        .enumerate()
        .map(|(k, (ingest_s, graph_s))| Step {
            ingest_s,
            graph_s,
            rss_mib: rss(k),
        })
        .collect()
}

const COMMITTED: &str = "novyra_consumer_records_committed_total";

/// The outbox is empty and the graph group has consumed everything.
async fn caught_up(cfg: &Config, store: &novyra_store::Store, graph: &str) -> anyhow::Result<bool> {
    if store.outbox_len().await? > 0 {
        return Ok(false);
    }
    let lags = novyra_pipeline::run::all_lag(cfg).await?;
    Ok(lags
        .iter()
        .filter(|(g, _)| g == graph)
        .all(|(_, ps)| ps.iter().all(|p| p.lag() == 0)))
}

/// The one bigint `n` that `sql` returns.
async fn scalar(store: &novyra_store::Store, sql: String) -> anyhow::Result<i64> {
    use diesel_async::RunQueryDsl;
    let mut conn = store.session().await?;
    let rows: Vec<Count> = diesel::sql_query(sql).load(&mut conn).await?;
    Ok(rows.into_iter().next().map_or(0, |c| c.n))
}

#[derive(diesel::QueryableByName)]
struct Count {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    n: i64,
}

/// What Postgres and Neo4j hold at the end.
async fn count(cfg: &Config, p: &str, out: &mut Outcome) -> anyhow::Result<()> {
    eprintln!("[bench] scale: counting what was stored");
    let store = novyra_store::Store::new(&cfg.migrate_store())?;
    let schema = cfg
        .database
        .schema
        .clone()
        .context("the bench runs in a schema")?;
    let parts = store.attempt_partitions().await?;
    out.attempts = parts.iter().map(|(_, rows)| rows).sum();
    out.partitions = parts
        .iter()
        .filter(|(name, rows)| *rows > 0 && !name.ends_with("_default"))
        .count();
    out.mastery_rows = store.mastery_row_count().await?;
    out.pg_bytes = scalar(
        &store,
        format!(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint AS n \
             FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace \
             WHERE s.nspname = '{schema}' AND c.relkind IN ('r', 'm')"
        ),
    )
    .await?;
    out.users = graph_count(
        cfg,
        "MATCH (u:User) WHERE u.id STARTS WITH $p RETURN count(u) AS n",
        p,
    )
    .await?;
    out.edges = graph_count(
        cfg,
        "MATCH (u:User)-[r:MASTERED_BY]->() WHERE u.id STARTS WITH $p RETURN count(r) AS n",
        p,
    )
    .await?;
    Ok(())
}

/// A count from Neo4j, for the ids starting with `p`.
async fn graph_count(cfg: &Config, cypher: &str, p: &str) -> anyhow::Result<i64> {
    let neo = neo4rs::Graph::new(&cfg.neo4j.uri, &cfg.neo4j.user, &cfg.neo4j.password)?;
    let mut rows = neo.execute(query(cypher).param("p", p)).await?;
    let mut n = 0;
    while let Some(row) = rows.next().await? {
        n = row.get("n")?;
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn opts(attempts: usize, users: usize, concepts: usize) -> ScaleOptions {
        ScaleOptions {
            scale_attempts: attempts,
            scale_users: users,
            scale_concepts: concepts,
            scale_shares: 1,
        }
    }

    #[test]
    fn the_expected_pairs_are_the_generated_ones() {
        let ids: Vec<String> = (0..7).map(|c| format!("c{c}")).collect();
        for (attempts, users, concepts) in [
            (100, 10, 7),
            (95, 10, 7),
            (15, 10, 7),
            (7, 10, 7),
            (400, 10, 3),
            (1000, 12, 7),
        ] {
            let s = opts(attempts, users, concepts);
            let load = Load::new("p-", &s, 1_700_000_000_000);
            let got = load.slice(0, attempts, &ids[..concepts]);
            let pairs: HashSet<_> = got
                .iter()
                .map(|(_, a)| (a.user_id.clone(), a.concept_id.clone()))
                .collect();
            assert_eq!(
                load.pairs(attempts),
                pairs.len(),
                "{attempts} attempts, {users} users, {concepts} concepts"
            );
        }
    }

    #[test]
    fn every_student_appears_once_a_round_in_time_order_and_never_in_the_future() {
        let now = 1_700_000_000_000;
        let s = opts(10_000, 1_000, 50);
        let load = Load::new("p-", &s, now);
        let ids: Vec<String> = (0..50).map(|c| format!("c{c}")).collect();
        // Generated in two slices, as the benchmark publishes them.
        let mut all = load.slice(0, 4_321, &ids);
        all.extend(load.slice(4_321, 10_000, &ids));
        let mut last = std::collections::HashMap::new();
        for (k, (key, a)) in all.iter().enumerate() {
            assert_eq!(key, &a.user_id);
            assert!(a.occurred_at < now - 86_400_000);
            if let Some(prev) = last.insert(a.user_id.clone(), a.occurred_at) {
                assert!(
                    prev < a.occurred_at,
                    "attempt {k} of {key} is not after its last"
                );
            }
        }
        assert_eq!(last.len(), 1_000);
        let ids: HashSet<_> = all.iter().map(|(_, a)| &a.event_id).collect();
        assert_eq!(ids.len(), 10_000, "event ids repeat");
    }

    #[test]
    fn shares_time_each_part_of_the_work_from_the_first_commit() {
        // Joins for 3 s, then 100 attempts/s for 10 s and 50/s for 20 s;
        // the graph starts 2 s later and runs at 40 records/s throughout.
        let samples: Vec<Sample> = (0..=400)
            .map(|t| {
                let secs = f64::from(t) / 10.0;
                let w = (secs - 3.0).max(0.0);
                Sample {
                    secs,
                    ingest: (w.min(10.0) * 100.0 + (w - 10.0).clamp(0.0, 20.0) * 50.0).round(),
                    graph: ((secs - 5.0).clamp(0.0, 50.0) * 40.0).min(1_300.0).round(),
                    rss_mib: secs,
                }
            })
            .collect();
        let (total, rate) = overall(&samples, |x| x.ingest);
        assert_eq!(total, 2_000.0);
        assert!((rate - 2_000.0 / 30.0).abs() < 1.0, "{rate}");
        let steps = split(&samples, 2);
        assert_eq!(steps.len(), 2);
        assert!((steps[0].ingest_s - 10.0).abs() < 0.15, "{steps:?}");
        assert!((steps[1].ingest_s - 20.0).abs() < 0.15, "{steps:?}");
        assert!((steps[0].graph_s - 16.25).abs() < 0.15, "{steps:?}");
        assert!((steps[1].graph_s - 16.25).abs() < 0.15, "{steps:?}");
        assert!((steps[0].rss_mib - 13.0).abs() < 0.15, "{steps:?}");
    }
}
