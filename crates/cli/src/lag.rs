//! `novyra lag`: per group, topic and partition, the committed offset, the
//! end offset, the lag in records and in seconds, and the owning member —
//! the columns of `kafka-consumer-groups --describe`, read from the same
//! broker APIs, plus an exit code that can gate a deploy.

use anyhow::Result;
use clap::Args;
use novyra_pipeline::{run, Config};

/// Exit code when a threshold is exceeded (1 stays "the command failed").
pub const EXCEEDED: u8 = 3;

/// Options of `novyra lag`.
#[derive(Args, Debug)]
pub struct LagArgs {
    /// Print one JSON object per partition.
    #[arg(long)]
    json: bool,
    /// Only this group suffix (ingest, catalog, graph).
    #[arg(long)]
    group: Option<String>,
    /// Exit with code 3 when any partition lags by more records than this.
    #[arg(long)]
    max_lag: Option<i64>,
    /// Exit with code 3 when any partition's oldest unconsumed record is
    /// older than this many seconds.
    #[arg(long)]
    max_lag_seconds: Option<f64>,
}

/// Prints the lag and returns whether every threshold held.
pub async fn lag(cfg: &Config, a: &LagArgs) -> Result<bool> {
    let wanted = a.group.as_deref().map(|g| cfg.group(g));
    let mut ok = true;
    if !a.json {
        outln!(
            "{:<20} {:<28} {:>9} {:>14} {:>14} {:>8} {:>11}  CONSUMER-ID / HOST / CLIENT-ID",
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "LAG-SECONDS",
        )?;
    }
    for (group, parts) in run::describe_lag(cfg).await? {
        if wanted.as_ref().is_some_and(|w| *w != group) {
            continue;
        }
        for p in parts {
            let over_records = a.max_lag.is_some_and(|m| p.lag() > m);
            let over_secs = a
                .max_lag_seconds
                .is_some_and(|m| p.lag_seconds.is_none_or(|s| s > m) && p.lag() > 0);
            ok &= !(over_records || over_secs);
            if a.json {
                outln!(
                    "{}",
                    serde_json::json!({
                        "group": group, "topic": p.topic, "partition": p.partition,
                        "committed": p.committed, "end": p.high, "lag": p.lag(),
                        "lag_seconds": p.lag_seconds, "member": p.owner,
                    })
                )?;
            } else {
                outln!(
                    "{group:<20} {:<28} {:>9} {:>14} {:>14} {:>8} {:>11}  {}",
                    p.topic,
                    p.partition,
                    p.committed.map_or("-".into(), |c| c.to_string()),
                    p.high,
                    p.lag(),
                    p.lag_seconds.map_or("?".into(), |s| format!("{s:.1}")),
                    p.owner.as_ref().map_or("-".into(), |m| format!(
                        "{} / {} / {}",
                        m.member_id, m.host, m.client_id
                    )),
                )?;
            }
        }
    }
    if !ok {
        eprintln!(
            "lag above the threshold (max-lag {:?}, max-lag-seconds {:?})",
            a.max_lag, a.max_lag_seconds
        );
    }
    Ok(ok)
}
