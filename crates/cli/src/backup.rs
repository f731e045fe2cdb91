//! `novyra graph export|import`: the graph's logical backup as JSON lines
//! (see novyra_graph::GraphRecord), with a SHA-256 of the export so two
//! snapshots can be compared; deploy/backup/ wraps it with pg_dump.

use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};
use novyra_graph::{GraphCountsByKind, GraphRecord};
use novyra_pipeline::Config;
use sha2::{Digest, Sha256};

/// Records per import transaction.
const IMPORT_BATCH: usize = 5_000;

fn summary(what: &str, n: &GraphCountsByKind, sha: Option<&str>) -> std::io::Result<()> {
    outln!(
        "{what}: {} concepts, {} users, {} prerequisite edges, {} mastery edges{}",
        n.concepts,
        n.users,
        n.prerequisites,
        n.mastery,
        sha.map(|s| format!("; sha256 {s}")).unwrap_or_default()
    )
}

/// Writes the export to `out` (`-`: stdout) and prints counts and checksum.
pub async fn export(cfg: &Config, out: &Path, id_prefix: &str) -> Result<()> {
    let graph = cfg.graph()?;
    let to_stdout = out.as_os_str() == "-";
    let mut w: Box<dyn Write> = if to_stdout {
        Box::new(BufWriter::new(std::io::stdout().lock()))
    } else {
        Box::new(BufWriter::new(
            std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?,
        ))
    };
    let mut hash = Sha256::new();
    let n = graph
        .export(id_prefix, |r| -> std::io::Result<()> {
            let mut line = serde_json::to_vec(r)?;
            line.push(b'\n');
            hash.update(&line);
            w.write_all(&line)
        })
        .await??;
    w.flush()?;
    drop(w);
    let sha: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    if to_stdout {
        eprintln!("sha256 {sha}");
    } else {
        summary(&format!("exported to {}", out.display()), &n, Some(&sha))?;
    }
    Ok(())
}

/// Reads an export and MERGEs it into the graph in batches.
pub async fn import(cfg: &Config, input: &Path) -> Result<()> {
    let graph = cfg.graph()?;
    graph.ensure_schema().await?;
    let f = std::fs::File::open(input).with_context(|| format!("opening {}", input.display()))?;
    let mut total = GraphCountsByKind::default();
    let mut batch: Vec<GraphRecord> = Vec::with_capacity(IMPORT_BATCH);
    let flush = |batch: &mut Vec<GraphRecord>| {
        let b = std::mem::take(batch);
        let graph = graph.clone();
        async move { graph.import(&b).await }
    };
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let line = line?;
        if line.trim().is_empty() {
            continue;
        }
        let r: GraphRecord = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}", input.display(), i + 1))?;
        batch.push(r);
        if batch.len() >= IMPORT_BATCH {
            let n = flush(&mut batch).await?;
            add(&mut total, &n);
        }
    }
    if !batch.is_empty() {
        let n = flush(&mut batch).await?;
        add(&mut total, &n);
    }
    summary(&format!("imported from {}", input.display()), &total, None)?;
    Ok(())
}

fn add(total: &mut GraphCountsByKind, n: &GraphCountsByKind) {
    total.concepts += n.concepts;
    total.users += n.users;
    total.prerequisites += n.prerequisites;
    total.mastery += n.mastery;
}
