//! Record headers: schema identity and trace context.

use nudge_contracts::headers::{SCHEMA, SCHEMA_VERSION, SchemaRef, TRACEPARENT};
use nudge_platform_telemetry::TraceContext;
use rdkafka::message::{Header, Headers, OwnedHeaders};

/// Headers for a record of `schema` produced on behalf of `trace`.
pub fn record_headers(schema: SchemaRef, trace: Option<&TraceContext>) -> OwnedHeaders {
    HeaderValues::new(schema, trace).headers()
}

/// The header values of records of one schema produced on behalf of one trace, written out
/// once for a batch of them: each record still needs headers of its own (the producer takes
/// them over), but not the formatting.
#[derive(Debug, Clone)]
pub struct HeaderValues {
    schema: &'static str,
    version: String,
    traceparent: Option<String>,
}

impl HeaderValues {
    pub fn new(schema: SchemaRef, trace: Option<&TraceContext>) -> Self {
        Self {
            schema: schema.name,
            version: schema.version.to_string(),
            traceparent: trace.map(TraceContext::to_header),
        }
    }

    /// Headers for one record.
    pub fn headers(&self) -> OwnedHeaders {
        let headers = OwnedHeaders::new_with_capacity(3)
            .insert(Header { key: SCHEMA, value: Some(self.schema) })
            .insert(Header { key: SCHEMA_VERSION, value: Some(self.version.as_str()) });
        match &self.traceparent {
            Some(tp) => headers.insert(Header { key: TRACEPARENT, value: Some(tp.as_str()) }),
            None => headers,
        }
    }
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use nudge_contracts::headers::EVENT_V1;

    use super::*;

    #[test]
    fn every_record_of_a_batch_gets_the_schema_and_the_trace() {
        let trace = TraceContext::new_root();
        let values = HeaderValues::new(EVENT_V1, Some(&trace));
        for headers in [values.headers(), values.headers(), record_headers(EVENT_V1, Some(&trace))] {
            assert_eq!(headers.count(), 3);
            assert_eq!(header_str(Some(&headers), SCHEMA), Some(EVENT_V1.name));
            assert_eq!(header_str(Some(&headers), SCHEMA_VERSION), Some("1"));
            let tp = trace.to_header();
            assert_eq!(header_str(Some(&headers), TRACEPARENT), Some(tp.as_str()));
            assert_eq!(trace_of(Some(&headers)).trace_id(), trace.trace_id());
        }
        let untraced = HeaderValues::new(EVENT_V1, None).headers();
        assert_eq!(untraced.count(), 2);
        assert_eq!(header_str(Some(&untraced), TRACEPARENT), None);
    }
}
