//! `novyra tail TOPIC`: any of the pipeline's topics decoded through the
//! registry, one JSON object per line (or a compact table), like kcat or
//! kafka-avro-console-consumer.
//!
//! It assigns partitions itself and never subscribes, so it never joins a
//! consumer group, and it never commits: tailing cannot move the pipeline's
//! offsets or trigger a rebalance. DLQ records show their `__connect.errors.*`
//! headers, and their original payload is decoded when it can be.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use clap::Args;
use novyra_kafka::rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use novyra_kafka::rdkafka::message::{Headers, Message};
use novyra_kafka::rdkafka::{Offset, TopicPartitionList};
use novyra_pipeline::Config;
use novyra_registry::Codec;
use serde_json::{json, Value};

/// Options of `novyra tail`.
#[derive(Args, Debug)]
pub struct TailArgs {
    /// A topic kind (attempts, concepts, prerequisites, mastery, dlq) or a
    /// full topic name.
    topic: String,
    /// Start at the earliest record still on the topic.
    #[arg(long, conflicts_with_all = ["from_time", "offset", "last"])]
    from_beginning: bool,
    /// Print the records among the last N offsets of each partition and
    /// exit (with `--follow`, keep waiting), like kcat's `-o -N -e`.
    /// Compaction and transaction markers can leave fewer than N.
    #[arg(long, value_name = "N", conflicts_with_all = ["from_time", "offset"])]
    last: Option<u32>,
    /// Start at the first record at or after this time: RFC 3339
    /// (2026-11-27T08:00:00Z), epoch milliseconds, or an age (30s, 15m, 2h, 1d).
    #[arg(long, conflicts_with = "offset")]
    from_time: Option<String>,
    /// Start at this offset (in `--partition`, or in every partition).
    #[arg(long)]
    offset: Option<i64>,
    /// Only this partition.
    #[arg(long)]
    partition: Option<i32>,
    /// Stop after this many records (after `--where`).
    #[arg(short = 'n', long = "count")]
    count: Option<usize>,
    /// Keep waiting for new records. Without a start option this is the
    /// default (start at the end, print what arrives).
    #[arg(long)]
    follow: bool,
    /// Only records where FIELD equals VALUE (repeatable, all must hold).
    /// FIELD is key, partition, offset, schema_id, headers.NAME, or a field
    /// of the value (dots for nested: rubric.rubric_id).
    #[arg(long = "where", value_name = "FIELD=VALUE")]
    filters: Vec<String>,
    /// One compact line per record instead of JSON.
    #[arg(long)]
    table: bool,
}

/// Where to start.
enum Start {
    Beginning,
    End,
    Time(i64),
    Offset(i64),
    Last(i64),
}

/// Parses `--from-time`.
fn parse_time(s: &str, now_ms: i64) -> Result<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let n: i64 = num.parse().with_context(|| {
        format!("--from-time {s:?}: not RFC 3339, epoch ms, or an age like 15m")
    })?;
    let ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => bail!("--from-time {s:?}: the age unit must be s, m, h or d"),
    };
    Ok(now_ms - n * ms)
}

/// Parses `--where` filters into (path, value).
fn parse_filters(f: &[String]) -> Result<Vec<(Vec<String>, String)>> {
    f.iter()
        .map(|x| {
            let (k, v) = x
                .split_once('=')
                .with_context(|| format!("--where {x:?}: expected FIELD=VALUE"))?;
            // Header names contain dots (__connect.errors.topic): one step.
            let path = match k.split_once('.') {
                Some(("headers", name)) => vec!["headers".to_owned(), name.to_owned()],
                _ => k.split('.').map(str::to_owned).collect(),
            };
            Ok((path, v.to_owned()))
        })
        .collect()
}

/// Whether a printed record passes every filter. Top-level fields (key,
/// partition, offset, schema_id, headers) first, then the value's fields.
fn matches(rec: &Value, filters: &[(Vec<String>, String)]) -> bool {
    filters.iter().all(|(path, want)| {
        let top = rec.get(&path[0]).filter(|_| path[0] != "value");
        let mut v = match top {
            Some(v) => v,
            None => match rec.get("value") {
                Some(v) => v,
                None => return false,
            },
        };
        let rest = if top.is_some() { &path[1..] } else { &path[..] };
        for p in rest {
            match v.get(p) {
                Some(x) => v = x,
                None => return false,
            }
        }
        match v {
            Value::String(s) => s == want,
            Value::Null => want == "null",
            other => *other.to_string() == **want,
        }
    })
}

/// Decodes one record into its printed form.
async fn render(codec: &Codec, m: &impl Message) -> Value {
    let ts = m
        .timestamp()
        .to_millis()
        .and_then(DateTime::<Utc>::from_timestamp_millis)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    let mut rec = json!({
        "topic": m.topic(),
        "partition": m.partition(),
        "offset": m.offset(),
        "timestamp": ts,
        "key": m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
        "schema_id": null,
        "value": null,
    });
    if let Some(h) = m.headers() {
        let headers: BTreeMap<String, String> = h
            .iter()
            .map(|x| {
                (
                    x.key.to_owned(),
                    String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                )
            })
            .collect();
        rec["headers"] = json!(headers);
    }
    if let Some(payload) = m.payload() {
        match codec.decode_value(payload).await {
            Ok((id, _, v)) => {
                rec["schema_id"] = json!(id);
                match Value::try_from(v) {
                    Ok(j) => rec["value"] = j,
                    Err(e) => rec["error"] = json!(format!("not representable as JSON: {e}")),
                }
            }
            Err(e) => {
                rec["error"] = json!(e.to_string());
                rec["payload_hex"] = json!(payload
                    .iter()
                    .take(256)
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>());
            }
        }
    }
    rec
}

/// One compact line: where, when, key, then the value's fields.
fn table_line(rec: &Value) -> String {
    let fields = match (&rec["value"], rec.get("error")) {
        (Value::Object(o), _) => o
            .iter()
            .map(|(k, v)| match v {
                Value::String(s) => format!("{k}={s}"),
                other => format!("{k}={other}"),
            })
            .collect::<Vec<_>>()
            .join(" "),
        (_, Some(e)) => format!("! {}", e.as_str().unwrap_or_default()),
        (Value::Null, None) => "(tombstone)".into(),
        (other, None) => other.to_string(),
    };
    let reason = rec
        .get("headers")
        .and_then(|h| h.get(novyra_kafka::dlq::header::CLASS))
        .and_then(Value::as_str)
        .map(|c| format!(" [{c}]"))
        .unwrap_or_default();
    format!(
        "{:>3}/{:<8} {} {:<28}{reason} {}",
        rec["partition"].as_i64().unwrap_or(-1),
        rec["offset"].as_i64().unwrap_or(-1),
        rec["timestamp"].as_str().unwrap_or("-"),
        rec["key"].as_str().unwrap_or("-"),
        fields
    )
}

/// Runs `novyra tail`.
pub async fn tail(cfg: &Config, a: &TailArgs) -> Result<()> {
    let topic = crate::topic_arg(cfg, &a.topic)?;
    let filters = parse_filters(&a.filters)?;
    let now = Utc::now().timestamp_millis();
    let start = match (&a.from_time, a.offset, a.from_beginning, a.last) {
        (Some(t), _, _, _) => Start::Time(parse_time(t, now)?),
        (_, Some(o), _, _) => Start::Offset(o),
        (_, _, true, _) => Start::Beginning,
        (_, _, _, Some(n)) => Start::Last(i64::from(n)),
        _ => Start::End,
    };
    let follow = a.follow || matches!(start, Start::End);
    let codec = Codec::new(&cfg.registry())?;

    // Partitions, their end offsets now, and where to start in each.
    let kafka = cfg.kafka();
    let (t2, only) = (topic.clone(), a.partition);
    let marks = tokio::task::spawn_blocking(move || -> Result<Vec<(i32, i64, i64)>> {
        let c: BaseConsumer = kafka.reader_config().create()?;
        let m = novyra_kafka::lag::watermarks(&c, &t2, Duration::from_secs(10))?;
        Ok(m.into_iter()
            .filter(|(p, _, _)| only.is_none_or(|o| o == *p))
            .collect())
    })
    .await??;
    if marks.is_empty() {
        bail!("topic {topic} not found (or no such partition)");
    }
    let consumer: StreamConsumer = cfg.kafka().reader_config().create()?;
    let mut tpl = TopicPartitionList::new();
    for &(p, low, high) in &marks {
        let o = match start {
            Start::Beginning => Offset::Beginning,
            Start::End => Offset::End,
            Start::Offset(o) => Offset::Offset(o),
            Start::Time(t) => Offset::Offset(t),
            Start::Last(n) => Offset::Offset((high - n).max(low)),
        };
        tpl.add_partition_offset(&topic, p, o)?;
    }
    if let Start::Time(_) = start {
        tpl = consumer.offsets_for_times(tpl, Duration::from_secs(10))?;
    }
    // Without --follow, stop at the end offsets seen now (kcat's -e).
    let mut open: BTreeMap<i32, i64> = BTreeMap::new();
    for e in tpl.elements() {
        let (_, low, high) = marks
            .iter()
            .find(|(p, _, _)| *p == e.partition())
            .copied()
            .unwrap_or_default();
        let from = match e.offset() {
            Offset::Offset(o) => o.max(low),
            Offset::Beginning => low,
            _ => high,
        };
        if from < high {
            open.insert(e.partition(), high);
        }
    }
    consumer.assign(&tpl)?;
    let mut printed = 0usize;
    if a.count == Some(0) {
        return Ok(());
    }
    loop {
        if !follow && open.is_empty() {
            break;
        }
        let m = match tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            Err(_) => continue,
            Ok(m) => m?,
        };
        let (p, o) = (m.partition(), m.offset());
        if !follow {
            match open.get(&p) {
                Some(&high) if o < high => {
                    if o + 1 >= high {
                        open.remove(&p);
                    }
                }
                _ => continue,
            }
        }
        let rec = render(&codec, &m).await;
        if !matches(&rec, &filters) {
            continue;
        }
        if a.table {
            outln!("{}", table_line(&rec))?;
        } else {
            outln!("{rec}")?;
        }
        printed += 1;
        if a.count.is_some_and(|n| printed >= n) {
            break;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_three_forms() {
        let now = 1_800_000_000_000;
        assert_eq!(parse_time("15m", now).expect("parses"), now - 900_000);
        assert_eq!(parse_time("2d", now).expect("parses"), now - 2 * 86_400_000);
        assert_eq!(
            parse_time("1700000000000", now).expect("parses"),
            1_700_000_000_000
        );
        assert_eq!(
            parse_time("2026-11-27T08:00:00Z", now).expect("parses"),
            1_795_766_400_000
        );
        assert!(parse_time("yesterday", now).is_err());
        assert!(parse_time("5w", now).is_err());
    }

    #[test]
    fn filters_look_at_the_record_then_the_value() {
        let rec = json!({"partition": 3, "key": "u1", "schema_id": 7,
            "headers": {"h": "x", "a.b": "y"},
            "value": {"user_id": "u1", "correct": true, "rubric": {"rubric_id": "r"}}});
        let ok = |f: &[&str]| {
            let f: Vec<String> = f.iter().map(|s| s.to_string()).collect();
            matches(&rec, &parse_filters(&f).expect("parses"))
        };
        assert!(ok(&["user_id=u1", "partition=3", "correct=true"]));
        assert!(ok(&[
            "rubric.rubric_id=r",
            "headers.h=x",
            "key=u1",
            "headers.a.b=y"
        ]));
        assert!(!ok(&["user_id=u2"]));
        assert!(!ok(&["missing=1"]));
        assert!(parse_filters(&["nofield".into()]).is_err());
    }
}
