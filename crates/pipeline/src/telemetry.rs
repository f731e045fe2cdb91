//! Logs and traces.
//!
//! Logs go to stderr, as text or JSON, filtered by `RUST_LOG`. Traces are
//! exported over OTLP/gRPC only when `OTEL_EXPORTER_OTLP_ENDPOINT` (or
//! `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set: the variables every
//! OpenTelemetry SDK reads, so an operator turns tracing on without a
//! config change, and a pipeline without a collector exports nothing. The
//! service is `novyra` unless `OTEL_SERVICE_NAME` says otherwise; the
//! sampler follows `OTEL_TRACES_SAMPLER`.
//!
//! Trace context crosses Kafka as W3C `traceparent`/`tracestate` headers
//! and crosses the outbox as a `traceparent` column, so one trace follows
//! an attempt from the ingest's Postgres transaction through the relay's
//! produce to the Cypher that writes its mastery edge. Work is done in
//! batches, and a span has one parent: a batch span continues the trace of
//! its first record that carries a context ([`follow`]) and links up to
//! [`MAX_LINKS`] others, so every record's trace is reachable from the
//! batch that handled it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use novyra_kafka::rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{SpanContext, TraceContextExt, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::Layer as _;

/// The service name traces carry when `OTEL_SERVICE_NAME` is unset.
pub const SERVICE: &str = "novyra";

/// Links a batch span keeps to records of other traces. A bound, because a
/// batch of thousands of records from thousands of traces would otherwise
/// make every span as large as the batch.
pub const MAX_LINKS: usize = 64;

static EXPORTING: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported: attributes that cost work per record (the
/// offset ranges of a batch) are only computed when they go somewhere.
pub fn exporting() -> bool {
    EXPORTING.load(Ordering::Relaxed)
}

/// Why tracing could not start: the endpoint is not a usable URL, or the
/// exporter could not be built. Logging alone never fails.
#[derive(Debug, thiserror::Error)]
#[error("{key}={endpoint}: no OTLP trace exporter for it: {source}")]
pub struct TelemetryError {
    key: &'static str,
    endpoint: String,
    #[source]
    source: opentelemetry_otlp::ExporterBuildError,
}

/// Holds the trace exporter; [`Telemetry::shutdown`] flushes the spans
/// still queued, which a process that simply exits would lose.
#[must_use = "call shutdown() before exit, or the last spans are lost"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("tracing", &self.provider.is_some())
            .finish()
    }
}

/// The OTLP endpoint from the standard variables, if tracing is wanted,
/// with the variable that set it (errors name it).
fn endpoint() -> Option<(&'static str, String)> {
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .into_iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| (k, v)))
    .find(|(_, v)| !v.trim().is_empty())
}

impl Telemetry {
    /// Installs the global subscriber: logs on stderr (`json` for JSON
    /// lines), and the OpenTelemetry layer when an endpoint is set. Must
    /// run inside the Tokio runtime: the gRPC channel lives there.
    pub fn init(json: bool) -> Result<Self, TelemetryError> {
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| "info,rdkafka=warn".into());
        let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
        let logs = if json {
            fmt.json().with_filter(filter).boxed()
        } else {
            fmt.with_filter(filter).boxed()
        };
        let Some((key, endpoint)) = endpoint() else {
            tracing_subscriber::registry().with(logs).init();
            return Ok(Self { provider: None });
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(endpoint.clone())
            .build()
            .map_err(|source| TelemetryError {
                key,
                endpoint: endpoint.clone(),
                source,
            })?;
        let mut resource = Resource::builder();
        if std::env::var_os("OTEL_SERVICE_NAME").is_none() {
            resource = resource.with_service_name(SERVICE);
        }
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build();
        // Only the pipeline's own spans, whatever RUST_LOG says about logs:
        // a dependency's debug spans are not the trace an operator wants.
        let spans = tracing_subscriber::filter::Targets::new()
            .with_target("novyra", tracing::Level::INFO)
            .with_target("novyra_pipeline", tracing::Level::INFO)
            .with_target("novyra_graph", tracing::Level::INFO)
            .with_target("novyra_store", tracing::Level::INFO);
        let traces = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer(SERVICE))
            .with_filter(spans);
        tracing_subscriber::registry()
            .with(logs)
            .with(traces)
            .init();
        EXPORTING.store(true, Ordering::Relaxed);
        tracing::info!(endpoint = %endpoint, "exporting traces over OTLP");
        Ok(Self {
            provider: Some(provider),
        })
    }

    /// Whether spans are exported.
    pub fn tracing(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes and stops the exporter. The flush blocks on the gRPC
    /// channel, whose tasks run on this runtime, so it runs on a blocking
    /// thread rather than a worker.
    pub async fn shutdown(self) {
        let Some(provider) = self.provider else {
            return;
        };
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = done {
            eprintln!("trace exporter shutdown: {e}");
        }
    }
}

/// The W3C `traceparent` of `span`, to store next to what it wrote; None
/// when tracing is off (the span has no valid context).
pub fn traceparent(span: &Span) -> Option<String> {
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.remove("traceparent")
}

/// The context a stored `traceparent` names, if it is a valid one.
pub fn context_of(traceparent: &str) -> Option<Context> {
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    valid(TraceContextPropagator::new().extract(&carrier))
}

/// The trace context a Kafka record carries in its headers, if any.
pub fn record_context<M: Message>(m: &M) -> Option<Context> {
    let headers = m.headers()?;
    valid(TraceContextPropagator::new().extract(&HeaderReader(headers)))
}

/// Kafka headers carrying `traceparent` (None for no context).
pub fn headers_for(traceparent: Option<&str>) -> Option<OwnedHeaders> {
    let cx = context_of(traceparent?)?;
    let mut writer = HeaderWriter(OwnedHeaders::new());
    TraceContextPropagator::new().inject_context(&cx, &mut writer);
    Some(writer.0)
}

fn valid(cx: Context) -> Option<Context> {
    cx.span().span_context().is_valid().then_some(cx)
}

/// Makes `span` continue the first of `contexts` and link the next
/// [`MAX_LINKS`] distinct others; returns the index of the one it
/// continues. Call before the span is first entered: a started span's
/// parent is fixed.
pub fn follow<I>(span: &Span, contexts: I) -> Option<usize>
where
    I: IntoIterator<Item = Option<Context>>,
{
    let mut parent = None;
    // The parent first: records of the same transaction share a context,
    // and a link to the parent itself would hide it (Jaeger shows it as
    // a FOLLOWS_FROM reference instead of the parent).
    let mut seen: Vec<SpanContext> = Vec::new();
    for (i, cx) in contexts.into_iter().enumerate() {
        let Some(cx) = cx else { continue };
        let sc = cx.span().span_context().clone();
        if seen.contains(&sc) {
            continue;
        }
        if parent.is_none() {
            if span.set_parent(cx).is_err() {
                return None;
            }
            parent = Some(i);
        }
        seen.push(sc);
        if seen.len() > MAX_LINKS {
            break;
        }
    }
    for sc in seen.into_iter().skip(1) {
        span.add_link(sc);
    }
    parent
}

/// Offsets as `partition:first-last` ranges, one per partition (or any
/// other key, such as `topic/partition`) in order: the span attribute that
/// ties a span to the records it handled.
pub fn offset_ranges<K, I>(coords: I) -> String
where
    K: Ord + std::fmt::Display,
    I: IntoIterator<Item = (K, i64)>,
{
    let mut ranges: std::collections::BTreeMap<K, (i64, i64)> = Default::default();
    for (p, o) in coords {
        let r = ranges.entry(p).or_insert((o, o));
        r.0 = r.0.min(o);
        r.1 = r.1.max(o);
    }
    ranges
        .iter()
        .map(|(p, (a, b))| format!("{p}:{a}-{b}"))
        .collect::<Vec<_>>()
        .join(",")
}

struct HeaderReader<'a, H>(&'a H);

impl<H: Headers> Extractor for HeaderReader<'_, H> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|h| h.key.eq_ignore_ascii_case(key))
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|h| h.key).collect()
    }
}

struct HeaderWriter(OwnedHeaders);

impl Injector for HeaderWriter {
    fn set(&mut self, key: &str, value: String) {
        let headers = std::mem::replace(&mut self.0, OwnedHeaders::new());
        self.0 = headers.insert(Header {
            key,
            value: Some(&value),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_survives_the_headers_and_a_bad_one_is_none() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let headers = headers_for(Some(tp)).expect("headers");
        let got = HeaderReader(&headers).get("traceparent").map(str::to_owned);
        assert_eq!(got.as_deref(), Some(tp));
        assert!(context_of("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none());
        assert!(context_of("garbage").is_none());
        assert!(headers_for(None).is_none());
    }

    #[test]
    fn offset_ranges_span_each_partition() {
        let s = offset_ranges([(3, 10), (1, 7), (3, 12), (3, 11), (1, 7)]);
        assert_eq!(s, "1:7-7,3:10-12");
    }

    /// Runs `f` under a subscriber whose spans end in memory.
    fn traced(f: impl FnOnce()) -> Vec<opentelemetry_sdk::trace::SpanData> {
        let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, f);
        provider.force_flush().expect("flush");
        exporter.get_finished_spans().expect("spans")
    }

    fn cx(trace: u128, span: u64) -> Option<Context> {
        context_of(&format!("00-{trace:032x}-{span:016x}-01"))
    }

    #[test]
    fn a_batch_continues_its_first_context_and_links_each_other_once() {
        let mut head = None;
        let mut stored = None;
        let spans = traced(|| {
            let span = tracing::info_span!("batch");
            head = follow(&span, [None, cx(7, 1), cx(7, 1), cx(9, 2), cx(7, 1), None]);
            stored = traceparent(&span);
        });
        assert_eq!(head, Some(1));
        assert_eq!(spans.len(), 1);
        let s = &spans[0];
        assert_eq!(
            s.span_context.trace_id(),
            opentelemetry::trace::TraceId::from(7)
        );
        assert_eq!(s.parent_span_id, opentelemetry::trace::SpanId::from(1));
        let links: Vec<_> = s
            .links
            .links
            .iter()
            .map(|l| l.span_context.clone())
            .collect();
        assert_eq!(links.len(), 1, "the parent is not also a link: {links:?}");
        assert_eq!(links[0].trace_id(), opentelemetry::trace::TraceId::from(9));
        // What the outbox keeps names this span, in the parent's trace.
        let want = format!("00-{:032x}-{}-01", 7, s.span_context.span_id());
        assert_eq!(stored, Some(want));
    }

    #[test]
    fn links_are_bounded() {
        let spans = traced(|| {
            let span = tracing::info_span!("batch");
            let many = (1..=500u64).map(|i| cx(u128::from(i), i));
            assert_eq!(follow(&span, many), Some(0));
        });
        assert_eq!(spans[0].links.links.len(), MAX_LINKS);
    }

    #[test]
    fn without_a_layer_a_span_has_no_traceparent() {
        let span = tracing::info_span!("x");
        assert_eq!(traceparent(&span), None);
    }
}
