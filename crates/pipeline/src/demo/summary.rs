//! The end-of-run summary and the consistency checks behind it: attempts
//! produced = rows stored, one mastery row per attempted pair, one
//! `MASTERED_BY` edge per mastery row with the same score, and an
//! independent BKT recomputation matching every stored value.

use std::collections::HashMap;
use std::fmt::Write as _;

use novyra_core::mastery::bkt_update;
use novyra_core::BktParams;
use novyra_kafka::lag::watermarks;
use novyra_kafka::rdkafka::consumer::BaseConsumer;

use novyra_core::Topic;

use crate::error::WorkerError;
use crate::run::all_lag;
use crate::Config;

/// Everything the summary reports.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Messages per topic (high minus low watermark).
    pub topics: Vec<(String, i64)>,
    /// Table counts.
    pub tables: novyra_store::stats::TableCounts,
    /// Graph counts.
    pub graph: novyra_graph::GraphCounts,
    /// Total lag per group.
    pub lag: Vec<(String, i64)>,
    /// Check results: (name, passed, detail).
    pub checks: Vec<(String, bool, String)>,
    /// A student and what they can learn next.
    pub next_for: Option<(String, Vec<novyra_graph::NextConcept>)>,
}

/// Checks the audit rows and recomputes mastery from them, independently of
/// the store's code: returns (attempts checked, audit rows whose `after` is
/// not one BKT step from their `before` with the parameters they record,
/// final mastery per pair replayed with the catalogue's current parameters,
/// the defaults for a concept it lacks). Rows must come per pair in applied
/// order.
pub fn recompute(
    rows: &[novyra_store::stats::AttemptAudit],
    current: &HashMap<String, BktParams>,
) -> (usize, usize, HashMap<(String, String), f64>) {
    let mut finals: HashMap<(String, String), f64> = HashMap::new();
    let mut bad = 0;
    for r in rows {
        let recorded = BktParams {
            p_init: r.params.0,
            p_transit: r.params.1,
            p_slip: r.params.2,
            p_guess: r.params.3,
        };
        let observed = r.correct && r.hints_used == 0;
        if bkt_update(r.mastery_before, observed, &recorded).to_bits() != r.mastery_after.to_bits()
        {
            bad += 1;
        }
        let p = current.get(&r.concept_id).copied().unwrap_or_default();
        let key = (r.user_id.clone(), r.concept_id.clone());
        let before = *finals.get(&key).unwrap_or(&p.p_init);
        finals.insert(key, bkt_update(before, observed, &p));
    }
    (rows.len(), bad, finals)
}

/// Gathers the summary; `produced_attempts` (if known) is checked against the rows.
pub async fn gather(
    cfg: &Config,
    produced_attempts: Option<usize>,
    user_prefix: &str,
) -> Result<Summary, WorkerError> {
    let store = novyra_store::Store::new(&cfg.store())?;
    let graph = cfg.graph()?;
    let mut s = Summary::default();
    let kafka = cfg.kafka();
    let names: Vec<String> = Topic::ALL.into_iter().map(|t| cfg.topic(t)).collect();
    s.topics = tokio::task::spawn_blocking(move || -> Result<Vec<(String, i64)>, WorkerError> {
        let c: BaseConsumer = kafka.reader_config().create()?;
        names
            .into_iter()
            .map(|t| {
                let n = watermarks(&c, &t, std::time::Duration::from_secs(10))?
                    .iter()
                    .map(|(_, lo, hi)| hi - lo)
                    .sum();
                Ok((t, n))
            })
            .collect()
    })
    .await
    .map_err(|e| WorkerError::Join(e.to_string()))??;
    s.tables = store.table_counts().await?;
    s.graph = graph.counts().await?;
    s.lag = all_lag(cfg)
        .await?
        .into_iter()
        .map(|(g, ps)| (g.to_owned(), ps.iter().map(|p| p.lag()).sum()))
        .collect();

    if let Some(n) = produced_attempts {
        s.checks.push((
            "attempts produced = rows in concept_attempts".into(),
            n as i64 == s.tables.concept_attempts,
            format!("{n} produced, {} stored", s.tables.concept_attempts),
        ));
    }
    s.checks.push((
        "one mastery_records row per attempted (user, concept)".into(),
        s.tables.mastery_records == s.tables.attempted_pairs,
        format!(
            "{} rows, {} pairs",
            s.tables.mastery_records, s.tables.attempted_pairs
        ),
    ));
    let (n, bad, finals) = recompute(
        &store.attempts_in_applied_order().await?,
        &store.catalogue_params().await?,
    );
    let mastery = store.mastery_rows().await?;
    let final_bad = mastery
        .iter()
        .filter(|m| {
            finals
                .get(&(m.user_id.clone(), m.concept_id.clone()))
                .map(|v| v.to_bits())
                != Some(m.mastery.to_bits())
        })
        .count();
    s.checks.push((
        "independent BKT recomputation matches every stored value".into(),
        bad == 0 && final_bad == 0,
        format!("{n} attempts replayed, {bad} audit mismatches, {final_bad} mastery mismatches"),
    ));
    let edges: HashMap<(String, String), f64> = graph
        .mastery_edges(user_prefix)
        .await?
        .into_iter()
        .map(|(u, c, sc, _)| ((u, c), sc))
        .collect();
    let ours: Vec<_> = mastery
        .iter()
        .filter(|m| m.user_id.starts_with(user_prefix))
        .collect();
    let edge_bad = ours
        .iter()
        .filter(|m| edges.get(&(m.user_id.clone(), m.concept_id.clone())) != Some(&m.mastery))
        .count();
    s.checks.push((
        "one MASTERED_BY edge per mastery row, same score".into(),
        edge_bad == 0 && edges.len() == ours.len(),
        format!(
            "{} rows, {} edges, {edge_bad} differ",
            ours.len(),
            edges.len()
        ),
    ));
    s.checks.push((
        "consumer lag is 0".into(),
        s.lag.iter().all(|(_, l)| *l == 0),
        format!("{:?}", s.lag),
    ));
    if let Some(m) = mastery.iter().find(|m| m.user_id.starts_with(user_prefix)) {
        let next = graph
            .next_concepts(&m.user_id, cfg.pipeline.mastery_threshold, 5)
            .await?;
        s.next_for = Some((m.user_id.clone(), next));
    }
    Ok(s)
}

impl Summary {
    /// Whether every check passed.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|(_, ok, _)| *ok)
    }

    /// The human-readable table, with the demo's timings when given.
    pub fn render(&self, run: Option<&crate::live::DemoRun>) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "\n== NOVYRA Stream summary ==");
        let _ = writeln!(o, "\nEvents per topic:");
        for (t, n) in &self.topics {
            let _ = writeln!(o, "  {t:<28} {n:>10}");
        }
        let t = &self.tables;
        let _ = writeln!(o, "\nPostgreSQL rows:");
        for (name, n) in [
            ("concepts", t.concepts),
            ("concept_prerequisites", t.concept_prerequisites),
            ("concept_attempts", t.concept_attempts),
            ("rubric_evaluations", t.rubric_evaluations),
            ("mastery_records", t.mastery_records),
            ("evaluation_logs", t.evaluation_logs),
        ] {
            let _ = writeln!(o, "  {name:<28} {n:>10}");
        }
        let _ = writeln!(o, "\nNeo4j nodes and relationships:");
        for (l, n) in self.graph.nodes.iter().chain(&self.graph.relationships) {
            let _ = writeln!(o, "  {l:<28} {n:>10}");
        }
        let _ = writeln!(o, "\nConsumer lag:");
        for (g, l) in &self.lag {
            let _ = writeln!(o, "  {g:<28} {l:>10}");
        }
        if let Some(r) = run {
            let _ = write!(o, "{}", render_run(r));
        }
        if let Some((u, next)) = &self.next_for {
            let _ = writeln!(o, "\nNext concepts to learn for {u}:");
            for c in next {
                let _ = writeln!(
                    o,
                    "  {:<12} {:<22} score {:.3}  ({} prerequisites mastered)",
                    c.id, c.name, c.score, c.prerequisites
                );
            }
        }
        let _ = writeln!(o, "\nChecks:");
        for (name, ok, detail) in &self.checks {
            let _ = writeln!(
                o,
                "  [{}] {name}: {detail}",
                if *ok { "ok" } else { "FAIL" }
            );
        }
        o
    }
}

/// The demo's timings: start-up apart from the steady rate, and freshness.
fn render_run(r: &crate::live::DemoRun) -> String {
    let mut o = String::new();
    let offered = if r.offered_rate > 0 {
        format!("offered at {}/s", r.offered_rate)
    } else {
        "offered as fast as the producer could".to_owned()
    };
    let _ = writeln!(
        o,
        "\nTimings ({} attempts, {offered}):",
        r.published.attempts
    );
    let _ = writeln!(
        o,
        "  {:<28} {:>9.1} s  (groups joined, curriculum in the catalogue and graph)",
        "start-up",
        r.startup.as_secs_f64()
    );
    match r.ingest_rate {
        Some(rate) => {
            let _ = writeln!(
                o,
                "  {:<28} {:>9.0} /s (attempts, first to last ingest commit)",
                "pipeline rate", rate
            );
        }
        None => {
            let _ = writeln!(
                o,
                "  {:<28} {:>11} (no attempt committed)",
                "pipeline rate", "-"
            );
        }
    }
    let rows = [
        (
            "graph freshness",
            &r.freshness,
            "attempt in Kafka to its edge in Neo4j",
        ),
        (
            "  of which ingest",
            &r.hops[0],
            "attempt in Kafka to its Postgres commit",
        ),
        (
            "  of which graph sink",
            &r.hops[1],
            "mastery record in Kafka to Neo4j",
        ),
    ];
    for (label, q, what) in rows {
        match q {
            Some(q) if q.len() == 3 => {
                let _ = writeln!(
                    o,
                    "  {label:<28} p50 {:.0} ms, p95 {:.0} ms, p99 {:.0} ms ({what})",
                    q[0] * 1e3,
                    q[1] * 1e3,
                    q[2] * 1e3
                );
            }
            _ => {
                let _ = writeln!(o, "  {label:<28} {:>11} (nothing measured)", "-");
            }
        }
    }
    let _ = writeln!(
        o,
        "  {:<28} {:>9.1} s  (start to every group idle, start-up included)",
        "total elapsed",
        r.elapsed.as_secs_f64()
    );
    o
}
