//! The baseline the issue asks us to beat: the consumer most people would
//! write first. Each attempt is decoded, then inserted together with its
//! mastery row in its own transaction, and Kafka auto-commits what was
//! consumed. It does less than the real ingest (no outbox, no offset fence,
//! no event-id claim), so the comparison flatters it, not us.

use std::time::Duration;

use diesel::sql_types::{BigInt, Bool, Double, Integer, Text, Timestamptz};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, RunQueryDsl};
use novyra_core::Topic;
use novyra_core::{BktParams, ConceptAttempted, MasteryState};
use novyra_kafka::rdkafka::consumer::{Consumer, StreamConsumer};
use novyra_kafka::rdkafka::Message;
use novyra_pipeline::{CancellationToken, Config, Health};
use novyra_registry::{Codec, EventKind};
use novyra_store::{ts, Store, StoreError};

/// Consumer group suffix of the baseline.
pub const GROUP: &str = "baseline";

#[derive(QueryableByName)]
struct Row {
    #[diesel(sql_type = Double)]
    mastery: f64,
    #[diesel(sql_type = BigInt)]
    attempts_total: i64,
    #[diesel(sql_type = BigInt)]
    attempts_correct: i64,
    #[diesel(sql_type = Double)]
    confidence_weight: f64,
}

/// Runs the baseline consumer until `stop`, serving the same metrics as
/// the real workers (committed records, end-to-end latency).
pub async fn run(cfg: &Config, stop: CancellationToken) -> anyhow::Result<()> {
    let health = Health::new();
    let server = {
        let (h, addr, s) = (
            health.clone(),
            cfg.pipeline.metrics_addr.clone(),
            stop.clone(),
        );
        tokio::spawn(async move { h.serve(&addr, s).await })
    };
    let group = cfg.group(GROUP);
    let store = Store::new(&cfg.store())?;
    let codec = Codec::new(&cfg.registry())?;
    let consumer: StreamConsumer = cfg
        .kafka()
        .consumer_config(&group)
        .set("enable.auto.offset.store", "true")
        .create()?;
    consumer.subscribe(&[&cfg.topic(Topic::Attempts)])?;
    let params = BktParams::default();
    // One connection for the worker's life, as the consumer people write
    // first holds one (connecting per attempt would cost it a TLS
    // handshake each and flatter the comparison).
    let mut conn = store.session().await?;
    loop {
        let msg = tokio::select! {
            m = consumer.recv() => m?,
            _ = stop.cancelled() => break,
        };
        let Some(payload) = msg.payload() else {
            continue;
        };
        let Ok(d) = codec
            .decode::<ConceptAttempted>(EventKind::Attempt, payload)
            .await
        else {
            continue;
        };
        let a = d.value;
        conn.transaction::<_, StoreError, _>(async |tx| {
            let row: Option<Row> = diesel::sql_query(
                "SELECT mastery, attempts_total, attempts_correct, confidence_weight \
                 FROM mastery_records WHERE user_id = $1 AND concept_id = $2 FOR UPDATE",
            )
            .bind::<Text, _>(&a.user_id)
            .bind::<Text, _>(&a.concept_id)
            .get_result(tx)
            .await
            .map(Some)
            .or_else(|e| match e {
                diesel::result::Error::NotFound => Ok(None),
                e => Err(e),
            })?;
            let mut state = match row {
                Some(r) => MasteryState {
                    mastery: r.mastery,
                    attempts_total: r.attempts_total,
                    attempts_correct: r.attempts_correct,
                    confidence_weight: r.confidence_weight,
                    last_event_id: String::new(),
                    updated_at: 0,
                    // The baseline never recomputes: one version per attempt.
                    version: r.attempts_total,
                },
                None => MasteryState::initial(&params),
            };
            let applied = state.apply(&a, &params);
            let inserted = diesel::sql_query(
                "INSERT INTO concept_attempts (event_id, user_id, concept_id, occurred_at, correct, \
                 hints_used, duration_ms, mastery_before, mastery_after, mastery_delta, mastery_version, \
                 bkt_p_init, bkt_p_transit, bkt_p_slip, bkt_p_guess, source_partition, source_offset, \
                 schema_id) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18) \
                 ON CONFLICT DO NOTHING",
            )
            .bind::<Text, _>(&a.event_id)
            .bind::<Text, _>(&a.user_id)
            .bind::<Text, _>(&a.concept_id)
            .bind::<Timestamptz, _>(ts(a.occurred_at))
            .bind::<Bool, _>(a.correct)
            .bind::<Integer, _>(a.hints_used)
            .bind::<BigInt, _>(a.duration_ms)
            .bind::<Double, _>(applied.before)
            .bind::<Double, _>(applied.after)
            .bind::<Double, _>(applied.after - applied.before)
            .bind::<BigInt, _>(applied.version)
            .bind::<Double, _>(params.p_init)
            .bind::<Double, _>(params.p_transit)
            .bind::<Double, _>(params.p_slip)
            .bind::<Double, _>(params.p_guess)
            .bind::<Integer, _>(msg.partition())
            .bind::<BigInt, _>(msg.offset())
            .bind::<Integer, _>(i32::try_from(d.schema_id).unwrap_or(i32::MAX))
            .execute(tx)
            .await?;
            if inserted == 1 {
                diesel::sql_query(
                    "INSERT INTO mastery_records (user_id, concept_id, mastery, attempts_total, \
                     attempts_correct, confidence_weight, version, last_event_id, updated_at) \
                     VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9) ON CONFLICT (user_id, concept_id) DO UPDATE SET \
                     mastery = excluded.mastery, attempts_total = excluded.attempts_total, \
                     attempts_correct = excluded.attempts_correct, \
                     confidence_weight = excluded.confidence_weight, version = excluded.version, \
                     last_event_id = excluded.last_event_id, updated_at = excluded.updated_at",
                )
                .bind::<Text, _>(&a.user_id)
                .bind::<Text, _>(&a.concept_id)
                .bind::<Double, _>(state.mastery)
                .bind::<BigInt, _>(state.attempts_total)
                .bind::<BigInt, _>(state.attempts_correct)
                .bind::<Double, _>(state.confidence_weight)
                .bind::<BigInt, _>(state.version())
                .bind::<Text, _>(&a.event_id)
                .bind::<Timestamptz, _>(ts(a.occurred_at))
                .execute(tx)
                .await?;
            }
            Ok(())
        })
        .await?;
        health.metrics.committed.with_label_values(&[&group]).inc();
        health
            .metrics
            .observe_end_to_end(&group, std::slice::from_ref(&msg));
    }
    tokio::time::sleep(Duration::from_millis(10)).await;
    server.abort();
    Ok(())
}
