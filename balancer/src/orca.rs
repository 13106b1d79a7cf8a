//! ORCA load reports carried in the `endpoint-load-metrics` response header (gRFC A51, in
//! the HTTP form Envoy reads): parsing, pure and allocation-free.
//!
//! Accepted forms, as Envoy's `orca_parser.cc` accepts them:
//! - `TEXT cpu_utilization=0.3,application_utilization=0.5,rps_fractional=120,eps=2` — comma
//!   separated `name=value`. `:` is accepted as the delimiter too (`eps:2`): Envoy's parser
//!   used `:` before envoy#37724 moved it to `=`, and backends written against either exist.
//!   A value without the `TEXT ` prefix is read as TEXT (the pre-prefix form).
//! - `JSON {"cpu_utilization":0.3,"rps_fractional":120}` — the proto's JSON mapping, with the
//!   field names either as written in the proto or in lowerCamelCase (`rpsFractional`).
//! - `BIN <base64 proto>` is refused as malformed: it needs a protobuf decoder for no gain
//!   over TEXT, and no backend of this lab sends it.
//!
//! What makes a report malformed (it is then ignored and counted, never fatal): an unknown
//! metric name (other than `named_metrics.*`, which is accepted and not used), a metric given
//! twice, a value that is not a finite number, or a negative one — the checks Envoy makes.
//!
//! The balancer uses three numbers of a report (gRFC A58): the utilization
//! (`application_utilization` if above 0, else `cpu_utilization`), `rps_fractional` (qps)
//! and `eps`.

use http::HeaderName;

/// The response header a member reports its load in; never forwarded to clients.
pub(crate) const HEADER: HeaderName = HeaderName::from_static("endpoint-load-metrics");

/// The metrics of one report that the balancer reads; absent ones are 0, as in the proto.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Report {
    /// `cpu_utilization`.
    pub cpu_utilization: f64,
    /// `application_utilization`.
    pub application_utilization: f64,
    /// `rps_fractional`: requests per second the member served.
    pub rps: f64,
    /// `eps`: errors per second the member answered.
    pub eps: f64,
}

impl Report {
    /// The utilization A58 uses: `application_utilization` when reported (above 0), else
    /// `cpu_utilization`.
    pub(crate) fn utilization(&self) -> f64 {
        if self.application_utilization > 0.0 {
            self.application_utilization
        } else {
            self.cpu_utilization
        }
    }
}

/// Why a header value is not a usable report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Malformed {
    /// `BIN` (base64 protobuf) is not supported.
    #[error("binary (BIN) reports are not supported")]
    Binary,
    /// An entry is not `name=value` or `name:value`.
    #[error("an entry is not name=value")]
    Entry,
    /// A metric name this parser does not know.
    #[error("unknown metric name")]
    UnknownName,
    /// The same metric twice.
    #[error("a metric given twice")]
    Duplicate,
    /// A value that is not a finite, non-negative number.
    #[error("a value is not a finite non-negative number")]
    Value,
    /// JSON that is not an object of numbers.
    #[error("JSON is not an object of numbers")]
    Json,
}

/// Parses one `endpoint-load-metrics` value.
pub(crate) fn parse(value: &[u8]) -> Result<Report, Malformed> {
    let value = value.trim_ascii();
    if let Some(rest) = strip_prefix(value, b"TEXT") {
        parse_text(rest)
    } else if let Some(rest) = strip_prefix(value, b"JSON") {
        parse_json(rest)
    } else if strip_prefix(value, b"BIN").is_some() {
        Err(Malformed::Binary)
    } else if value.first() == Some(&b'{') {
        parse_json(value)
    } else {
        parse_text(value)
    }
}

/// `value` after `prefix` and at least one space (case-sensitive, as Envoy reads it).
fn strip_prefix<'a>(value: &'a [u8], prefix: &[u8]) -> Option<&'a [u8]> {
    let rest = value.strip_prefix(prefix)?;
    let trimmed = rest.trim_ascii_start();
    (rest.is_empty() || trimmed.len() < rest.len()).then_some(trimmed)
}

/// Which metric a name sets (as an index into a seen-mask), or `None` for a named metric.
fn field(name: &[u8]) -> Result<Option<usize>, Malformed> {
    Ok(Some(match name {
        b"cpu_utilization" | b"cpuUtilization" => 0,
        b"application_utilization" | b"applicationUtilization" => 1,
        b"rps_fractional" | b"rpsFractional" => 2,
        b"eps" => 3,
        // Known to ORCA but not used for balancing.
        b"mem_utilization" | b"memUtilization" => 4,
        n if n.starts_with(b"named_metrics.") && n.len() > b"named_metrics.".len() => {
            return Ok(None);
        }
        _ => return Err(Malformed::UnknownName),
    }))
}

/// Records `value` for metric `slot`, refusing a repeat.
fn set(report: &mut Report, seen: &mut u8, slot: usize, value: f64) -> Result<(), Malformed> {
    if *seen & (1 << slot) != 0 {
        return Err(Malformed::Duplicate);
    }
    *seen |= 1 << slot;
    match slot {
        0 => report.cpu_utilization = value,
        1 => report.application_utilization = value,
        2 => report.rps = value,
        3 => report.eps = value,
        _ => {}
    }
    Ok(())
}

fn number(text: &[u8]) -> Result<f64, Malformed> {
    let text = std::str::from_utf8(text.trim_ascii()).map_err(|_| Malformed::Value)?;
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.0 => Ok(v),
        _ => Err(Malformed::Value),
    }
}

fn parse_text(text: &[u8]) -> Result<Report, Malformed> {
    let mut report = Report::default();
    let mut seen = 0u8;
    for entry in text.split(|&b| b == b',') {
        let entry = entry.trim_ascii();
        if entry.is_empty() {
            continue;
        }
        let at = entry
            .iter()
            .position(|&b| b == b'=' || b == b':')
            .ok_or(Malformed::Entry)?;
        let (name, value) = (entry[..at].trim_ascii(), &entry[at + 1..]);
        if name.is_empty() {
            return Err(Malformed::Entry);
        }
        let value = number(value)?;
        if let Some(slot) = field(name)? {
            set(&mut report, &mut seen, slot, value)?;
        }
    }
    Ok(report)
}

fn parse_json(text: &[u8]) -> Result<Report, Malformed> {
    let object: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(text).map_err(|_| Malformed::Json)?;
    let mut report = Report::default();
    let mut seen = 0u8;
    for (name, value) in &object {
        // Maps of the proto (`named_metrics`, `utilization`, `request_cost`) are allowed and
        // not used; anything else must be a known metric with a number.
        if value.is_object() {
            continue;
        }
        let slot = match field(name.as_bytes())? {
            Some(slot) => slot,
            None => continue,
        };
        let v = value.as_f64().ok_or(Malformed::Json)?;
        if !v.is_finite() || v < 0.0 {
            return Err(Malformed::Value);
        }
        set(&mut report, &mut seen, slot, v)?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Report {
        parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn text_form_with_equals_or_colon() {
        let want = Report {
            cpu_utilization: 0.3,
            application_utilization: 0.5,
            rps: 120.0,
            eps: 2.0,
        };
        let eq = "TEXT cpu_utilization=0.3,application_utilization=0.5,rps_fractional=120,eps=2";
        assert_eq!(ok(eq), want);
        assert_eq!(ok(&eq.replace('=', ":")), want);
        assert_eq!(
            ok(
                "TEXT  cpu_utilization = 0.3 , application_utilization:0.5,rps_fractional=120,eps=2"
            ),
            want
        );
        assert_eq!(
            ok("rps_fractional=120,eps=2").rps,
            120.0,
            "no prefix is TEXT"
        );
        assert_eq!(ok("TEXT named_metrics.foo=1,rps_fractional=3").rps, 3.0);
        assert_eq!(ok("TEXT ").rps, 0.0, "an empty report is a report of zeros");
    }

    #[test]
    fn json_form_with_proto_or_camel_names() {
        let r = ok(r#"JSON {"cpu_utilization":0.25,"rps_fractional":10,"eps":1}"#);
        assert_eq!((r.cpu_utilization, r.rps, r.eps), (0.25, 10.0, 1.0));
        let r =
            ok(r#"JSON {"applicationUtilization":0.5,"rpsFractional":7,"namedMetrics":{"a":1}}"#);
        assert_eq!((r.application_utilization, r.rps), (0.5, 7.0));
        assert_eq!(ok(r#"{"eps":4}"#).eps, 4.0, "bare JSON object");
    }

    #[test]
    fn malformed_reports_are_refused_with_their_reason() {
        let cases = [
            ("TEXT eps=2,eps=3", Malformed::Duplicate),
            ("TEXT eps:2,eps=3", Malformed::Duplicate),
            ("TEXT bogus=1", Malformed::UnknownName),
            ("TEXT named_metrics.=1", Malformed::UnknownName),
            ("TEXT eps", Malformed::Entry),
            ("TEXT =1", Malformed::Entry),
            ("TEXT eps=", Malformed::Value),
            ("TEXT eps=abc", Malformed::Value),
            ("TEXT eps=NaN", Malformed::Value),
            ("TEXT eps=inf", Malformed::Value),
            ("TEXT eps=-1", Malformed::Value),
            ("JSON {\"eps\":\"2\"}", Malformed::Json),
            ("JSON [1,2]", Malformed::Json),
            ("JSON {eps:2", Malformed::Json),
            ("JSON {\"eps\":-2}", Malformed::Value),
            ("BIN AAAA", Malformed::Binary),
        ];
        for (text, want) in cases {
            assert_eq!(parse(text.as_bytes()), Err(want), "{text}");
        }
        assert_eq!(parse(b"TEXT eps=\xff"), Err(Malformed::Value));
    }

    #[test]
    fn utilization_prefers_application_over_cpu() {
        assert_eq!(ok("TEXT cpu_utilization=0.3").utilization(), 0.3);
        assert_eq!(
            ok("TEXT cpu_utilization=0.3,application_utilization=0.7").utilization(),
            0.7
        );
        assert_eq!(
            ok("TEXT cpu_utilization=0.3,application_utilization=0").utilization(),
            0.3
        );
    }
}
