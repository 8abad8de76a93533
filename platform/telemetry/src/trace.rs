//! W3C Trace Context (`traceparent: 00-<trace id>-<parent id>-<flags>`).
//!
//! The trace id is minted where a request enters the platform (or taken from the caller's
//! `traceparent`) and travels with everything the request causes: the Kafka record, the
//! decision, the Redis message and the frame pushed to the shopper. The format is what
//! OpenTelemetry propagates, so an OTLP exporter can pick these ids up unchanged.

use std::fmt;

/// A `traceparent` header that is not version 00 with non-zero ids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid W3C traceparent")]
pub struct TraceParseError;

/// The trace and span a piece of work belongs to.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
}

fn random<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    loop {
        // The OS random source does not fail on supported platforms; if it ever did, a
        // zero id would be invalid, so fall back to the clock rather than emit it.
        if crate::random::fill(&mut buf).is_err() {
            let nanos =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(1);
            for (i, b) in buf.iter_mut().enumerate() {
                *b = (nanos >> ((i % 16) * 8)) as u8 ^ (i as u8).wrapping_mul(31);
            }
        }
        if buf.iter().any(|&b| b != 0) {
            return buf;
        }
    }
}

impl TraceContext {
    /// A new trace, sampled.
    pub fn new_root() -> Self {
        Self { trace_id: random(), span_id: random(), sampled: true }
    }

    /// The same trace with a new span id, for work this process does on the trace's behalf.
    pub fn child(&self) -> Self {
        Self { span_id: random(), ..*self }
    }

    /// Parses a `traceparent` header value.
    pub fn parse(header: &str) -> Result<Self, TraceParseError> {
        let parts: Vec<&str> = header.trim().split('-').collect();
        let [version, trace, span, flags] = parts.as_slice() else { return Err(TraceParseError) };
        if *version != "00" || trace.len() != 32 || span.len() != 16 || flags.len() != 2 {
            return Err(TraceParseError);
        }
        let lower_hex = |s: &str| s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if ![trace, span, flags].iter().all(|s| lower_hex(s)) {
            return Err(TraceParseError);
        }
        let mut trace_id = [0u8; 16];
        let mut span_id = [0u8; 8];
        let mut flag = [0u8; 1];
        hex::decode_to_slice(trace, &mut trace_id).map_err(|_| TraceParseError)?;
        hex::decode_to_slice(span, &mut span_id).map_err(|_| TraceParseError)?;
        hex::decode_to_slice(flags, &mut flag).map_err(|_| TraceParseError)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return Err(TraceParseError);
        }
        Ok(Self { trace_id, span_id, sampled: flag[0] & 1 == 1 })
    }

    /// Parses a header when present and valid, otherwise starts a new trace.
    pub fn from_header_or_new(header: Option<&str>) -> Self {
        header.and_then(|h| Self::parse(h).ok()).map(|c| c.child()).unwrap_or_else(Self::new_root)
    }

    /// The `traceparent` header value.
    pub fn to_header(&self) -> String {
        // Written in place: producers add one to every record they send.
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        hex_into(&self.trace_id, &mut out[3..35]);
        hex_into(&self.span_id, &mut out[36..52]);
        hex_into(&[u8::from(self.sampled)], &mut out[53..55]);
        ascii(&out)
    }

    /// The trace id as 32 hex digits, as logs and error bodies show it.
    pub fn trace_id(&self) -> String {
        let mut out = [0u8; 32];
        hex_into(&self.trace_id, &mut out);
        ascii(&out)
    }
}

/// Lower-case hex digits of `bytes` into `out`, which is twice as long.
fn hex_into(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (byte, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

/// `bytes`, all ASCII by construction, as a `String`.
fn ascii(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

impl fmt::Debug for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_header())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_the_header() {
        let c = TraceContext::new_root();
        assert_eq!(TraceContext::parse(&c.to_header()), Ok(c));
    }

    #[test]
    fn parses_the_spec_example() {
        let c = TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(c.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(c.to_header(), "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
        assert_eq!(TraceContext::parse(unsampled).unwrap().to_header(), unsampled);
    }

    #[test]
    fn rejects_malformed_and_zero_ids() {
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
        ] {
            assert!(TraceContext::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn child_keeps_the_trace_and_changes_the_span() {
        let parent = TraceContext::new_root();
        let child = parent.child();
        assert_eq!(child.trace_id(), parent.trace_id());
        assert_ne!(child.to_header(), parent.to_header());
        let continued = TraceContext::from_header_or_new(Some(&parent.to_header()));
        assert_eq!(continued.trace_id(), parent.trace_id());
        assert_ne!(TraceContext::from_header_or_new(Some("junk")).trace_id(), parent.trace_id());
    }
}
