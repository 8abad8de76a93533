//! Record headers: schema identity and trace context.

use nudge_contracts::headers::{SCHEMA, SCHEMA_VERSION, SchemaRef, TRACEPARENT};
use nudge_platform_telemetry::TraceContext;
use rdkafka::message::{Header, Headers, OwnedHeaders};

/// Headers for a record of `schema` produced on behalf of `trace`.
pub fn record_headers(schema: SchemaRef, trace: Option<&TraceContext>) -> OwnedHeaders {
    let version = schema.version.to_string();
    let mut headers = OwnedHeaders::new_with_capacity(3)
        .insert(Header { key: SCHEMA, value: Some(schema.name) })
        .insert(Header { key: SCHEMA_VERSION, value: Some(version.as_str()) });
    if let Some(trace) = trace {
        let tp = trace.to_header();
        headers = headers.insert(Header { key: TRACEPARENT, value: Some(tp.as_str()) });
    }
    headers
}

/// The value of header `name` as text, when present and UTF-8.
pub fn header_str<'a, H: Headers>(headers: Option<&'a H>, name: &str) -> Option<&'a str> {
    let headers = headers?;
    headers.iter().find(|h| h.key == name).and_then(|h| h.value).and_then(|v| std::str::from_utf8(v).ok())
}

/// The trace a record was produced under, continued with a new span; a new trace when the
/// record carries none.
pub fn trace_of<H: Headers>(headers: Option<&H>) -> TraceContext {
    TraceContext::from_header_or_new(header_str(headers, TRACEPARENT))
}
