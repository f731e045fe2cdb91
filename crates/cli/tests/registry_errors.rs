//! Regression (found by `make chaos`): a registry that answers HTTP 500
//! (Apicurio 3.0 after its Postgres restarted) made the codec call a valid
//! schema id "unknown", and the converter cached that failure, so valid
//! records went to the DLQ for good. Now only a 404 makes an id unknown,
//! nothing failed is cached, and the same codec decodes once the registry
//! is back.
//!
//! NB: this test stops and restarts services of the shared local stack, so
//! it lives in its own test binary (cargo runs test binaries one at a time).

mod common;

use common::*;
use novyra_core::PrerequisiteLinked;
use novyra_core::Topic;
use novyra_registry::{wire, Codec, DecodeError, EventKind};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_error_is_retryable_and_never_cached() {
    let env = Env::new("regerr").await;
    let writer = Codec::new(&env.cfg.registry()).expect("codec");
    let link = PrerequisiteLinked {
        prerequisite_id: format!("{}-a", env.name),
        concept_id: format!("{}-b", env.name),
        linked_at: 1_795_000_000_000,
    };
    let bytes = writer
        .encode(
            &env.cfg.topic(Topic::Prerequisites),
            EventKind::Prerequisite,
            &link,
        )
        .await
        .expect("encode");
    let (id, _) = wire::split(&bytes).expect("frame");

    // A fresh codec has nothing cached; Apicurio answers 500 after its
    // Postgres restarted (upstream #5458) until it is restarted itself.
    let reader = Codec::new(&env.cfg.registry()).expect("codec");
    stack("postgres.sh", "stop");
    stack("postgres.sh", "start");
    let failed = reader
        .decode::<PrerequisiteLinked>(EventKind::Prerequisite, &bytes)
        .await;
    match &failed {
        Err(e @ DecodeError::Unavailable(_)) => assert!(e.is_retryable()),
        Ok(_) => println!("the registry answered at once; nothing to classify this time"),
        Err(e) => panic!("schema id {id} is registered: {e} must be retryable, not poison"),
    }
    stack("apicurio.sh", "stop");
    stack("apicurio.sh", "start");
    let got = reader
        .decode::<PrerequisiteLinked>(EventKind::Prerequisite, &bytes)
        .await
        .expect("the same codec decodes once the registry is back");
    assert_eq!(got.value, link);

    // A really unknown id is still poison.
    let mut unknown = bytes.clone();
    unknown[1..5].copy_from_slice(&0x7fff_fff0_u32.to_be_bytes());
    assert!(matches!(
        reader
            .decode::<PrerequisiteLinked>(EventKind::Prerequisite, &unknown)
            .await,
        Err(DecodeError::UnknownSchema { .. })
    ));
}
