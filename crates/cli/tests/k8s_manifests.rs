//! The Kubernetes manifests validate offline against the Kubernetes schemas
//! and KEDA's CRD (deploy/k8s/validate.sh), a broken one does not, and every
//! worker command they run is one `novyra` accepts.

use std::path::{Path, PathBuf};
use std::process::Command;

fn k8s() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/k8s")
}

fn validate(files: &[PathBuf]) -> (bool, String) {
    let out = Command::new("bash")
        .arg(k8s().join("validate.sh"))
        .args(files)
        .output()
        .expect("run validate.sh");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn manifests() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(k8s())
        .expect("deploy/k8s")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    v.sort();
    v
}

#[test]
fn manifests_validate_and_a_broken_one_does_not() {
    let files = manifests();
    assert!(files.len() >= 5, "{files:?}");
    let (ok, out) = validate(&files);
    assert!(ok, "{out}");
    assert!(out.contains(" 0 error(s)"), "{out}");

    // The same set with one Deployment broken: a string replica count and
    // a misspelt field are both refused.
    let dir = std::env::temp_dir().join(format!("k8s-broken-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("tmp");
    let mut broken = Vec::new();
    for f in &files {
        let mut text = std::fs::read_to_string(f).expect("read");
        if f.ends_with("ingest.yaml") {
            text = text.replacen("replicas: 1", "replicas: \"one\"", 1);
        }
        if f.ends_with("graph.yaml") {
            text = text.replacen("terminationGracePeriodSeconds", "terminationGracePeriod", 1);
        }
        let p = dir.join(f.file_name().expect("name"));
        std::fs::write(&p, text).expect("write");
        broken.push(p);
    }
    let (ok, out) = validate(&broken);
    assert!(!ok, "{out}");
    assert!(
        out.contains("novyra-ingest") && out.contains("'one'"),
        "{out}"
    );
    assert!(out.contains("novyra-graph"), "{out}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_worker_command_in_the_manifests_exists() {
    let mut seen = 0;
    for f in manifests() {
        for line in std::fs::read_to_string(&f).expect("read").lines() {
            let Some(args) = line.trim().strip_prefix("args: ") else {
                continue;
            };
            let args: Vec<String> = serde_json::from_str(args).expect("args as a flow list");
            let status = Command::new(env!("CARGO_BIN_EXE_novyra"))
                .args(&args)
                .arg("--help")
                .output()
                .expect("novyra");
            assert!(
                status.status.success(),
                "{}: novyra {args:?} is not a command",
                f.display()
            );
            seen += 1;
        }
    }
    assert_eq!(
        seen,
        novyra_pipeline::run::Worker::ALL.len(),
        "one command per worker"
    );
}

/// validate.py checks each ScaledObject against its topic's partition
/// count; its copy of the counts must be the topic table's.
#[test]
fn the_validators_partition_counts_are_the_topic_tables() {
    let py = std::fs::read_to_string(k8s().join("validate.py")).expect("validate.py");
    let line = py
        .lines()
        .find(|l| l.starts_with("PARTITIONS = "))
        .expect("a PARTITIONS line");
    let mut want: Vec<String> = novyra_core::topics::TOPICS
        .iter()
        .filter(|t| !t.consumed_by.is_empty())
        .map(|t| format!("\"novyra.{}\": {}", t.suffix, t.partitions))
        .collect();
    want.sort();
    let inner = line
        .trim_start_matches("PARTITIONS = {")
        .trim_end_matches('}');
    let mut got: Vec<String> = inner.split(", ").map(str::to_owned).collect();
    got.sort();
    assert_eq!(got, want, "update PARTITIONS in deploy/k8s/validate.py");
}
