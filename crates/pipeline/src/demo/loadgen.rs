//! Demo and load data: a curriculum (concepts in domains, a prerequisite
//! DAG) and simulated students who learn as BKT says, published through the
//! registry like any upstream app would. Deterministic for a given seed.

use std::time::{Duration, Instant};

use futures::stream::{FuturesUnordered, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use novyra_core::Topic;
use novyra_core::{
    keys, BktParams, ConceptAttempted, ConceptUpserted, EvaluationLogged, PrerequisiteLinked,
    RubricCriterion, RubricEvaluation,
};
use novyra_kafka::rdkafka::error::{KafkaError, RDKafkaErrorCode};
use novyra_kafka::rdkafka::producer::future_producer::OwnedDeliveryResult;
use novyra_kafka::rdkafka::producer::{FutureProducer, FutureRecord};
use novyra_registry::{Codec, EventKind};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// What to generate.
#[derive(Debug, Clone)]
pub struct LoadgenOptions {
    /// Number of concepts.
    pub concepts: usize,
    /// Number of domains.
    pub domains: usize,
    /// Number of students.
    pub students: usize,
    /// Number of attempts in total.
    pub attempts: usize,
    /// RNG seed.
    pub seed: u64,
    /// Attempts per second; 0 publishes as fast as Kafka takes them.
    pub rate: u64,
    /// Attempt times spread over this many days up to now.
    pub days: i64,
    /// Prefix of every generated id (tests use it to keep their data apart).
    pub id_prefix: String,
}

/// A generated curriculum.
#[derive(Debug, Clone)]
pub struct Curriculum {
    /// Concepts, in topological order.
    pub concepts: Vec<ConceptUpserted>,
    /// Prerequisite links (always from an earlier to a later concept).
    pub links: Vec<PrerequisiteLinked>,
}

const DOMAINS: [&str; 8] = [
    "algebra",
    "geometry",
    "statistics",
    "calculus",
    "logic",
    "number-theory",
    "probability",
    "linear-algebra",
];

/// Generates the curriculum.
pub fn curriculum(o: &LoadgenOptions, now_ms: i64) -> Curriculum {
    let mut rng = StdRng::seed_from_u64(o.seed);
    let mut concepts = Vec::with_capacity(o.concepts);
    let mut links = Vec::new();
    for i in 0..o.concepts {
        let domain = DOMAINS[i % o.domains.clamp(1, DOMAINS.len())];
        let difficulty =
            ((i as f64 / o.concepts.max(1) as f64) * 0.7 + rng.random_range(0.0..0.3)).min(1.0);
        let id = format!("{}c{:04}", o.id_prefix, i);
        concepts.push(ConceptUpserted {
            concept_id: id.clone(),
            name: format!("{domain} {i}"),
            domain: domain.to_owned(),
            difficulty: (difficulty * 1000.0).round() / 1000.0,
            bkt_p_init: None,
            bkt_p_transit: None,
            bkt_p_slip: None,
            bkt_p_guess: None,
            updated_at: now_ms - o.days * 86_400_000,
        });
        if i >= 3 {
            let n = rng.random_range(1..=3usize.min(i));
            let mut pres: Vec<usize> = (0..n)
                .map(|_| rng.random_range(i.saturating_sub(12)..i))
                .collect();
            pres.sort_unstable();
            pres.dedup();
            for p in pres {
                links.push(PrerequisiteLinked {
                    prerequisite_id: format!("{}c{:04}", o.id_prefix, p),
                    concept_id: id.clone(),
                    linked_at: now_ms - o.days * 86_400_000,
                });
            }
        }
    }
    Curriculum { concepts, links }
}

/// Generates the attempts of simulated students, ordered by time.
pub fn attempts(o: &LoadgenOptions, c: &Curriculum, now_ms: i64) -> Vec<ConceptAttempted> {
    // The prefix is part of the seed: runs with other prefixes get other
    // event ids (a repeated event id is a duplicate by contract).
    let salt = o.id_prefix.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let mut rng = StdRng::seed_from_u64(o.seed ^ salt);
    let students = o.students.max(1);
    let span = o.days.max(1) * 86_400_000;
    let start = now_ms - span;
    let mut out = Vec::with_capacity(o.attempts);
    for s in 0..students {
        let user = format!("{}u{:05}", o.id_prefix, s);
        let n = o.attempts / students + usize::from(s < o.attempts % students);
        let ability: f64 = rng.random_range(0.6..1.4);
        let mut known = vec![false; c.concepts.len()];
        let mut current = 0usize;
        let first = start + rng.random_range(0..span / 10);
        let step = ((span * 85 / 100) / (n.max(1) as i64)).max(2);
        for i in 0..n {
            // Strictly increasing per student and never in the future.
            let t = (first + i as i64 * step + rng.random_range(0..step / 2)).min(now_ms - 60_000);
            let concept = &c.concepts[current.min(c.concepts.len() - 1)];
            let p = BktParams::for_concept(concept);
            let hints = if rng.random_bool(0.15) {
                rng.random_range(1..=3)
            } else {
                0
            };
            let knows = known[current];
            let correct = if knows {
                !rng.random_bool(p.p_slip)
            } else {
                rng.random_bool(p.p_guess)
            };
            if !knows && rng.random_bool((p.p_transit * ability).min(1.0)) {
                known[current] = true;
            }
            let rubric = rng.random_bool(0.05).then(|| {
                let a = rng.random_range(0.0..1.0f64);
                let b = rng.random_range(0.0..1.0f64);
                RubricEvaluation {
                    rubric_id: "free-form-v1".into(),
                    weighted_total: (0.6 * a + 0.4 * b).clamp(0.0, 1.0),
                    criteria: vec![
                        RubricCriterion {
                            name: "reasoning".into(),
                            score: a,
                            weight: 0.6,
                        },
                        RubricCriterion {
                            name: "notation".into(),
                            score: b,
                            weight: 0.4,
                        },
                    ],
                }
            });
            out.push(ConceptAttempted {
                event_id: uuid::Builder::from_random_bytes(rng.random())
                    .into_uuid()
                    .to_string(),
                user_id: user.clone(),
                concept_id: concept.concept_id.clone(),
                occurred_at: t,
                correct,
                hints_used: hints,
                duration_ms: rng.random_range(5_000..180_000),
                rubric,
            });
            // Move on once the concept is learnt (or after being stuck a while).
            if known[current] && rng.random_bool(0.5) || rng.random_bool(0.04) {
                current = (current + 1).min(c.concepts.len() - 1);
            }
        }
    }
    out.sort_by_key(|a| a.occurred_at);
    out
}

/// The model evaluation behind each attempt graded by a rubric, as the
/// grading service would log it: prompt, response and scores as JSON.
pub fn evaluations(attempts: &[ConceptAttempted]) -> Vec<EvaluationLogged> {
    attempts
        .iter()
        .filter_map(|a| {
            let r = a.rubric.as_ref()?;
            let scores: serde_json::Map<String, serde_json::Value> = r
                .criteria
                .iter()
                .map(|c| (c.name.clone(), serde_json::json!(c.score)))
                .collect();
            let verdict = if r.weighted_total >= 0.5 { "pass" } else { "revise" };
            Some(EvaluationLogged {
                event_id: format!("eval-{}", a.event_id),
                user_id: a.user_id.clone(),
                concept_id: Some(a.concept_id.clone()),
                attempt_event_id: Some(a.event_id.clone()),
                model: "novyra-grader-demo".into(),
                prompt: serde_json::json!({
                    "template": "grade_free_text",
                    "rubric_id": r.rubric_id,
                    "concept_id": a.concept_id,
                })
                .to_string(),
                response: serde_json::json!({"verdict": verdict, "scores": scores}).to_string(),
                rubric: Some(
                    serde_json::json!({"rubric_id": r.rubric_id, "weighted_total": r.weighted_total})
                        .to_string(),
                ),
                occurred_at: a.occurred_at + 1,
            })
        })
        .collect()
}

/// Publishes `(key, value)` pairs of one kind, at most `rate` per second
/// (0: unlimited), with a progress bar unless `quiet`. Returns the count.
pub async fn publish<T: Serialize>(
    codec: &Codec,
    producer: &FutureProducer,
    topic: &str,
    kind: EventKind,
    items: &[(String, T)],
    rate: u64,
    quiet: bool,
) -> Result<usize, PublishError> {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(items.len() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{msg:>22} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_message(topic.to_owned());
    let started = Instant::now();
    let mut inflight = FuturesUnordered::new();
    let acked = |r: Result<OwnedDeliveryResult, _>| match r {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(PublishError(e.to_string())),
        Err(_) => Err(PublishError("producer dropped a delivery report".into())),
    };
    for (i, (key, value)) in items.iter().enumerate() {
        if rate > 0 {
            // Wait for the record's due time, collecting acks meanwhile.
            let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(due.into()) => break,
                    Some(r) = inflight.next(), if !inflight.is_empty() => {
                        acked(r)?;
                        bar.inc(1);
                    }
                }
            }
        }
        let payload = codec
            .encode(topic, kind, value)
            .await
            .map_err(|e| PublishError(e.to_string()))?;
        // NB: enqueue now (send_result), so the record leaves at its due
        // time; `send` would only enqueue when its future is first polled.
        let mut record = FutureRecord::to(topic).key(key).payload(&payload);
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    inflight.push(delivery);
                    break;
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    match inflight.next().await {
                        Some(r) => {
                            acked(r)?;
                            bar.inc(1);
                        }
                        None => tokio::time::sleep(Duration::from_millis(10)).await,
                    }
                }
                Err((e, _)) => return Err(PublishError(e.to_string())),
            }
        }
        if inflight.len() >= 20_000 {
            if let Some(r) = inflight.next().await {
                acked(r)?;
                bar.inc(1);
            }
        }
    }
    while let Some(r) = inflight.next().await {
        acked(r)?;
        bar.inc(1);
    }
    bar.finish();
    Ok(items.len())
}

/// Publishing failed.
#[derive(Debug, thiserror::Error)]
#[error("publish: {0}")]
pub struct PublishError(pub String);

/// Counts of what `generate_and_publish` sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Published {
    /// Concepts.
    pub concepts: usize,
    /// Links.
    pub links: usize,
    /// Attempts.
    pub attempts: usize,
    /// Distinct (user, concept) pairs attempted.
    pub pairs: usize,
    /// Model evaluations (one per rubric-graded attempt).
    pub evaluations: usize,
}

/// Publishes a curriculum's concepts, then its links (keyed as DESIGN.md
/// says); returns how many of each.
pub async fn publish_curriculum(
    cfg: &crate::Config,
    codec: &Codec,
    producer: &FutureProducer,
    c: &Curriculum,
    quiet: bool,
) -> Result<(usize, usize), PublishError> {
    let concepts: Vec<(String, ConceptUpserted)> = c
        .concepts
        .iter()
        .map(|x| (x.concept_id.clone(), x.clone()))
        .collect();
    let links: Vec<(String, PrerequisiteLinked)> = c
        .links
        .iter()
        .map(|l| {
            (
                keys::prerequisite_key(&l.prerequisite_id, &l.concept_id),
                l.clone(),
            )
        })
        .collect();
    publish(
        codec,
        producer,
        &cfg.topic(Topic::Concepts),
        EventKind::Concept,
        &concepts,
        0,
        quiet,
    )
    .await?;
    publish(
        codec,
        producer,
        &cfg.topic(Topic::Prerequisites),
        EventKind::Prerequisite,
        &links,
        0,
        quiet,
    )
    .await?;
    Ok((concepts.len(), links.len()))
}

/// Generates everything and publishes it, catalog first.
pub async fn generate_and_publish(
    cfg: &crate::Config,
    o: &LoadgenOptions,
    quiet: bool,
) -> Result<Published, PublishError> {
    generate_and_publish_after(cfg, o, quiet, async {}).await
}

/// [`generate_and_publish`], awaiting `ready` between the curriculum and
/// the attempts: the demo lets its pipeline join its groups and take in the
/// curriculum there, so the attempts meet running consumers and their
/// freshness measures the pipeline, not its start-up.
pub async fn generate_and_publish_after(
    cfg: &crate::Config,
    o: &LoadgenOptions,
    quiet: bool,
    ready: impl std::future::Future<Output = ()>,
) -> Result<Published, PublishError> {
    let codec = Codec::new(&cfg.registry()).map_err(|e| PublishError(e.to_string()))?;
    let producer = cfg
        .kafka()
        .producer()
        .map_err(|e| PublishError(e.to_string()))?;
    let now = chrono::Utc::now().timestamp_millis();
    let c = curriculum(o, now);
    let a = attempts(o, &c, now);
    let pairs = a
        .iter()
        .map(|x| (x.user_id.as_str(), x.concept_id.as_str()))
        .collect::<std::collections::HashSet<_>>()
        .len();
    let evals: Vec<(String, EvaluationLogged)> = evaluations(&a)
        .into_iter()
        .map(|x| (x.user_id.clone(), x))
        .collect();
    let attempts: Vec<(String, ConceptAttempted)> =
        a.into_iter().map(|x| (x.user_id.clone(), x)).collect();
    let (concepts, links) = publish_curriculum(cfg, &codec, &producer, &c, quiet).await?;
    ready.await;
    publish(
        &codec,
        &producer,
        &cfg.topic(Topic::Attempts),
        EventKind::Attempt,
        &attempts,
        o.rate,
        quiet,
    )
    .await?;
    publish(
        &codec,
        &producer,
        &cfg.topic(Topic::Evaluations),
        EventKind::Evaluation,
        &evals,
        0,
        quiet,
    )
    .await?;
    Ok(Published {
        concepts,
        links,
        attempts: attempts.len(),
        pairs,
        evaluations: evals.len(),
    })
}
