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
        }
        Err(e) => out.push(format!("store: {e}")),
    }
    out.join("; ")
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
