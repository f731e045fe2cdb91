//! What every pipeline integration test does first: its own schema,
//! topics and registered schemas on the shared local stack.

#![allow(dead_code, missing_docs)]

use std::collections::BTreeMap;
use std::time::Duration;

use novyra_core::Topic;
use novyra_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use novyra_kafka::rdkafka::message::{Headers, Message};
use novyra_kafka::rdkafka::{Offset, TopicPartitionList};
use novyra_pipeline::run::{self, Worker};
use novyra_pipeline::{CancellationToken, Config};

pub use novyra_testkit::{config, setup};

/// Runs catalog, ingest and graph in process until every group is idle.
/// If that takes too long, the panic says what was still not idle.
pub async fn run_all(cfg: &Config) {
    match tokio::time::timeout(
        Duration::from_secs(240),
        run::run(cfg, &Worker::ALL, true, CancellationToken::new()),
    )
    .await
    {
        Ok(ran) => ran.expect("pipeline ran"),
        Err(_) => panic!("pipeline not idle after 240 s: {}", not_idle(cfg).await),
    }
}

/// What keeps `run --exit-when-idle` from stopping: partitions with lag,
/// rows in the outbox, recomputations queued.
async fn not_idle(cfg: &Config) -> String {
    let mut out = Vec::new();
    match run::all_lag(cfg).await {
        Ok(groups) => {
            for (g, ps) in groups {
                for p in ps.iter().filter(|p| p.lag() != 0) {
                    out.push(format!(
                        "{g} {}/{} committed {:?} low {} high {}",
                        p.topic, p.partition, p.committed, p.low, p.high
                    ));
                }
            }
        }
        Err(e) => out.push(format!("lag unreadable: {e}")),
    }
    match novyra_store::Store::new(&cfg.store()) {
        Ok(s) => {
            out.push(format!("outbox {:?}", s.outbox_len().await));
            out.push(format!(
                "recompute pending {:?}",
                s.recompute_pending().await
            ));
            let group = cfg.group(novyra_pipeline::ingest::GROUP);
            let topic = cfg.topic(Topic::Attempts);
            out.push(format!(
                "ingest offsets in postgres {:?}",
                s.stored_offsets(&group, &topic).await
            ));
            out.push(format!(
                "busy postgres sessions {:?}",
                busy_sessions(&s).await
            ));
        }
        Err(e) => out.push(format!("store: {e}")),
    }
    out.join("; ")
}

/// Server sessions of the pipeline's role that are not idle: a transaction
/// left open (`idle in transaction`) or waiting on a lock is what holds a
/// worker up.
async fn busy_sessions(store: &novyra_store::Store) -> Result<Vec<String>, String> {
    use diesel::sql_types::{Double, Integer, Text};
    use diesel_async::RunQueryDsl;
    #[derive(diesel::QueryableByName)]
    struct Busy {
        #[diesel(sql_type = Integer)]
        pid: i32,
        #[diesel(sql_type = Text)]
        state: String,
        #[diesel(sql_type = Text)]
        wait: String,
        #[diesel(sql_type = Double)]
        xact_secs: f64,
        #[diesel(sql_type = Text)]
        query: String,
    }
    let mut c = store.session().await.map_err(|e| e.to_string())?;
    let rows: Vec<Busy> = diesel::sql_query(
        "SELECT pid, coalesce(state, '') AS state, \
         coalesce(wait_event_type || ':' || wait_event, '') AS wait, \
         coalesce(extract(epoch FROM now() - xact_start), 0)::float8 AS xact_secs, \
         left(query, 160) AS query \
         FROM pg_stat_activity \
         WHERE usename = current_user AND pid <> pg_backend_pid() AND state <> 'idle'",
    )
    .load(&mut c)
    .await
    .map_err(|e| e.to_string())?;
    Ok(rows
        .into_iter()
        .map(|b| {
            format!(
                "pid {} {} wait {:?} for {:.0} s: {}",
                b.pid, b.state, b.wait, b.xact_secs, b.query
            )
        })
        .collect())
}

/// The headers of the first `expect` DLQ records (or fewer after 20 s), by
/// name.
pub fn dlq(cfg: &Config, expect: usize) -> Vec<BTreeMap<String, String>> {
    let c: BaseConsumer = cfg.kafka().reader_config().create().expect("reader");
    let topic = cfg.topic(Topic::Dlq);
    let mut tpl = TopicPartitionList::new();
    for p in 0..3 {
        tpl.add_partition_offset(&topic, p, Offset::Beginning)
            .expect("partition");
    }
    c.assign(&tpl).expect("assign");
    let mut out = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while out.len() < expect && std::time::Instant::now() < deadline {
        if let Some(m) = c.poll(Duration::from_millis(500)) {
            let m = m.expect("dlq read");
            let h = m.headers().expect("dlq records carry headers");
            out.push(
                h.iter()
                    .map(|x| {
                        (
                            x.key.to_owned(),
                            String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                        )
                    })
                    .collect(),
            );
        }
    }
    out
}
