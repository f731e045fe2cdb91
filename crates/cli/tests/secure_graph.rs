//! Neo4j over TLS with environment changes only: the graph sink writes
//! through `bolt+s://` trusting the stack's CA (`NEO4J_CA_FILE`), a client
//! that trusts another CA is refused with a certificate error, and
//! `bolt+ssc://` (self-signed, unverified) connects without a CA.

mod common;

use std::process::{Command, Stdio};

use std::time::{Duration, Instant};

use common::{command, tls_file, Env};
use novyra_core::ConceptUpserted;
use novyra_pipeline::loadgen::publish;
use novyra_registry::{Codec, EventKind};

fn over_tls(env: &Env, scheme: &str, ca: Option<&str>) -> Command {
    let mut c = command(&env.cfg);
    c.env("NEO4J_URI", format!("{scheme}://127.0.0.1:7687"));
    match ca {
        Some(ca) => c.env("NEO4J_CA_FILE", tls_file(ca)),
        None => c.env_remove("NEO4J_CA_FILE"),
    };
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_graph_sink_writes_over_bolt_tls() {
    let env = Env::new("sgraph").await;
    let id = format!("{}-c1", env.name);
    let concept = ConceptUpserted {
        concept_id: id.clone(),
        name: "TLS".into(),
        domain: "security".into(),
        difficulty: 0.4,
        bkt_p_init: None,
        bkt_p_transit: None,
        bkt_p_slip: None,
        bkt_p_guess: None,
        updated_at: chrono::Utc::now().timestamp_millis(),
    };
    let codec = Codec::new(&env.cfg.registry()).expect("codec");
    let producer = env.cfg.kafka().producer().expect("producer");
    publish(
        &codec,
        &producer,
        &env.cfg.topic(novyra_core::Topic::Concepts),
        EventKind::Concept,
        &[(id.clone(), concept)],
        0,
        true,
    )
    .await
    .expect("publish");

    // The sink, over bolt+s with the stack's CA.
    let log = std::env::temp_dir().join(format!("{}-graph.log", env.name));
    let sink = common::Worker::new(
        over_tls(&env, "bolt+s", Some("ca.crt"))
            .arg("graph")
            .env("NOVYRA_METRICS_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "info,rdkafka=warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("graph sink"),
    );
    let plain = env.cfg.graph().expect("graph");
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut found = Vec::new();
    while Instant::now() < deadline && found.is_empty() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        found = plain.concept_ids(&env.name).await.expect("concepts");
    }
    // Checked before the SIGTERM so that a sink which could not connect
    // fails here with its log rather than on its exit status.
    assert_eq!(
        found,
        [id],
        "the sink wrote over bolt+s; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    sink.terminate();

    // A query over bolt+s, CA from the environment.
    let ok = over_tls(&env, "bolt+s", Some("ca.crt"))
        .args(["graph", "next", "--user", "nobody", "--json"])
        .env("RUST_LOG", "warn")
        .stderr(Stdio::piped())
        .output()
        .expect("graph next");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );

    // Another CA: refused, saying why.
    let bad = over_tls(&env, "bolt+s", Some("other-ca.crt"))
        .args(["graph", "next", "--user", "nobody", "--json"])
        .env("RUST_LOG", "off")
        .output()
        .expect("graph next, wrong CA");
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{err}");
    assert!(
        err.to_lowercase().contains("certificate"),
        "a certificate error: {err}"
    );

    // bolt+ssc: encrypted, not verified; no CA needed.
    let ssc = over_tls(&env, "bolt+ssc", None)
        .args(["graph", "next", "--user", "nobody", "--json"])
        .env("RUST_LOG", "warn")
        .output()
        .expect("graph next over ssc");
    assert!(
        ssc.status.success(),
        "{}",
        String::from_utf8_lossy(&ssc.stderr)
    );
}
