//! The compacted topics really are compacted, and still rebuild the graph.
//!
//! The test's compacted topics roll a segment every second and clean at
//! the lowest dirty ratio. After a pipeline run that writes several
//! versions per key (mastery updates, concepts revised, a link removed),
//! one more record per partition rolls the active segment (which Kafka
//! never compacts) and the broker's cleaner (2 s backoff in the local
//! stack) removes superseded records: the first offset a reader sees
//! moves past the partition's start and fewer records remain than were
//! written. Then the test's graph is wiped and `reconcile` rebuilds it
//! from the compacted topics, equal to Postgres edge for edge.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use novyra_core::Topic;
use novyra_core::{keys, ConceptUpserted};
use novyra_kafka::rdkafka::consumer::{BaseConsumer, Consumer};
use novyra_kafka::rdkafka::message::Message;
use novyra_kafka::rdkafka::producer::FutureRecord;
use novyra_kafka::rdkafka::{Offset, TopicPartitionList};
use novyra_pipeline::loadgen::{self, LoadgenOptions};
use novyra_pipeline::reconcile::{reconcile, ReconcileOptions};
use novyra_pipeline::Config;
use novyra_registry::{Codec, EventKind};

const COMPACTED: [Topic; 3] = [Topic::Concepts, Topic::Prerequisites, Topic::Mastery];

/// What a reader from the beginning sees of one partition.
#[derive(Debug, Default, Clone)]
struct Seen {
    low: i64,
    high: i64,
    first: Option<i64>,
    records: u64,
    last: Option<(Vec<u8>, Option<Vec<u8>>)>,
}

/// Reads every partition of `topic` from the beginning to its high watermark.
fn read_topic(cfg: &Config, topic: &str) -> BTreeMap<i32, Seen> {
    let c: BaseConsumer = cfg.kafka().reader_config().create().expect("reader");
    let marks = novyra_kafka::lag::watermarks(&c, topic, Duration::from_secs(10)).expect("marks");
    let mut out: BTreeMap<i32, Seen> = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for (p, low, high) in marks {
        out.insert(
            p,
            Seen {
                low,
                high,
                ..Seen::default()
            },
        );
        if high > low {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .expect("partition");
        }
    }
    c.assign(&tpl).expect("assign");
    let mut open: Vec<i32> = out
        .iter()
        .filter(|(_, s)| s.high > s.low)
        .map(|(p, _)| *p)
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !open.is_empty() {
        assert!(Instant::now() < deadline, "reading {topic} timed out");
        let Some(m) = c.poll(Duration::from_millis(500)) else {
            continue;
        };
        let m = m.expect("read");
        let s = out.get_mut(&m.partition()).expect("known partition");
        if m.offset() >= s.high {
            continue;
        }
        s.first.get_or_insert(m.offset());
        s.records += 1;
        s.last = Some((
            m.key().unwrap_or_default().to_vec(),
            m.payload().map(<[u8]>::to_vec),
        ));
        if m.offset() + 1 >= s.high {
            open.retain(|p| *p != m.partition());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_topics_lose_old_versions_and_still_rebuild_the_graph() {
    let cfg = common::config("compact");
    let mut specs = novyra_kafka::topics::pipeline_topics(-1);
    for s in specs
        .iter_mut()
        .filter(|s| COMPACTED.iter().any(|t| t.suffix() == s.suffix))
    {
        s.configs.push(("segment.ms", "1000".into()));
        s.configs.push(("min.cleanable.dirty.ratio", "0.01".into()));
    }
    novyra_kafka::topics::ensure(&cfg.kafka(), &cfg.topic_prefix, &specs, None)
        .await
        .expect("topics");
    common::setup(&cfg).await;
    let p = format!("{}-", cfg.topic_prefix.trim_end_matches('.'));
    let o = LoadgenOptions {
        concepts: 10,
        domains: 3,
        students: 20,
        attempts: 2_000,
        seed: 9,
        rate: 0,
        days: 30,
        id_prefix: p.clone(),
    };
    loadgen::generate_and_publish(&cfg, &o, true)
        .await
        .expect("publish");

    // Second versions: every concept renamed, one link removed.
    let now = chrono::Utc::now().timestamp_millis();
    let curriculum = loadgen::curriculum(&o, now);
    let codec = Codec::new(&cfg.registry()).expect("codec");
    let producer = cfg.kafka().producer().expect("producer");
    let revised: Vec<(String, ConceptUpserted)> = curriculum
        .concepts
        .iter()
        .map(|c| {
            let mut c = c.clone();
            c.name = format!("{} (revised)", c.name);
            c.updated_at = now;
            (c.concept_id.clone(), c)
        })
        .collect();
    loadgen::publish(
        &codec,
        &producer,
        &cfg.topic(Topic::Concepts),
        EventKind::Concept,
        &revised,
        0,
        true,
    )
    .await
    .expect("revise concepts");
    let gone = &curriculum.links[0];
    let gone_key = keys::prerequisite_key(&gone.prerequisite_id, &gone.concept_id);
    producer
        .send(
            FutureRecord::<str, [u8]>::to(&cfg.topic(Topic::Prerequisites)).key(&gone_key),
            Duration::from_secs(10),
        )
        .await
        .expect("tombstone");
    common::run_all(&cfg).await;
    // Two more rounds of attempts by the same students (new event ids from
    // other seeds): each round's batches add another version per key.
    for seed in [10, 11] {
        let more = LoadgenOptions { seed, ..o.clone() };
        let attempts: Vec<(String, novyra_core::ConceptAttempted)> =
            loadgen::attempts(&more, &curriculum, now)
                .into_iter()
                .map(|a| (a.user_id.clone(), a))
                .collect();
        loadgen::publish(
            &codec,
            &producer,
            &cfg.topic(Topic::Attempts),
            EventKind::Attempt,
            &attempts,
            0,
            true,
        )
        .await
        .expect("more attempts");
        common::run_all(&cfg).await;
    }

    // Roll every active segment: one more copy of each partition's last
    // record (same key and value, so the state does not change).
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let mut written: HashMap<Topic, u64> = HashMap::new();
    for t in COMPACTED {
        let topic = cfg.topic(t);
        let seen = read_topic(&cfg, &topic);
        let mut n = 0;
        for (partition, s) in seen {
            n += (s.high - s.low) as u64;
            let Some((key, value)) = s.last else { continue };
            n += 1;
            let mut r = FutureRecord::<[u8], [u8]>::to(&topic)
                .partition(partition)
                .key(&key);
            if let Some(v) = &value {
                r = r.payload(v);
            }
            producer
                .send(r, Duration::from_secs(10))
                .await
                .expect("roll");
        }
        written.insert(t, n);
    }
    assert!(
        written[&Topic::Mastery] > 400,
        "many versions written: {written:?}"
    );

    // The cleaner runs: fewer records remain, and the first record a reader
    // sees is past the partition's start.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut compacted: HashMap<Topic, (u64, bool)> = HashMap::new();
    loop {
        for t in COMPACTED {
            let seen = read_topic(&cfg, &cfg.topic(t));
            let remaining: u64 = seen.values().map(|s| s.records).sum();
            let moved = seen.values().any(|s| s.first.is_some_and(|f| f > s.low));
            compacted.insert(t, (remaining, moved));
        }
        let done = COMPACTED
            .iter()
            .all(|t| compacted[t].0 < written[t] && compacted[t].1);
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no compaction after 120 s: remaining {compacted:?} of written {written:?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    eprintln!("written {written:?}; remaining after compaction {compacted:?}");

    // The graph, wiped, is rebuilt from the compacted topics alone.
    cfg.graph()
        .expect("graph")
        .delete_prefixed(&p)
        .await
        .expect("wipe");
    let opts = ReconcileOptions {
        dry_run: false,
        id_prefix: p.clone(),
        force: false,
    };
    let report = reconcile(&cfg, &opts).await.expect("reconcile");
    let store = novyra_store::Store::new(&cfg.store()).expect("store");
    let rows = store.mastery_rows().await.expect("rows");
    assert_eq!(report.missing_concept, o.concepts as u64, "{report:?}");
    assert_eq!(
        report.missing_link,
        curriculum.links.len() as u64 - 1,
        "{report:?}"
    );
    assert_eq!(report.missing_mastery, rows.len() as u64, "{report:?}");
    assert_eq!(report.republished, 0, "the topic already had every row");

    let graph = cfg.graph().expect("graph");
    let edges: HashMap<(String, String), (u64, i64)> = graph
        .mastery_edge_states(&p)
        .await
        .expect("edges")
        .into_iter()
        .map(|e| ((e.user, e.concept), (e.score.to_bits(), e.version)))
        .collect();
    let want: HashMap<(String, String), (u64, i64)> = rows
        .iter()
        .map(|r| {
            (
                (r.user_id.clone(), r.concept_id.clone()),
                (r.mastery.to_bits(), r.version),
            )
        })
        .collect();
    assert_eq!(edges, want, "the rebuilt edges equal mastery_records");
    let nodes = graph.concept_nodes(&p).await.expect("nodes");
    assert_eq!(nodes.len(), o.concepts);
    assert!(
        nodes
            .iter()
            .all(|n| n.name.as_deref().is_some_and(|x| x.ends_with("(revised)"))),
        "the newest concept versions: {nodes:?}"
    );
    let links = graph.prerequisite_edges(&p).await.expect("links");
    assert_eq!(links.len(), curriculum.links.len() - 1);
    assert!(!links.contains(&(gone.prerequisite_id.clone(), gone.concept_id.clone())));

    let again = reconcile(&cfg, &opts).await.expect("reconcile again");
    assert_eq!(again.drift(), 0, "{again:?}");
}
