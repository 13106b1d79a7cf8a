//! A strict little parser of the Prometheus text exposition format (0.0.4), enough to check
//! what `/metrics` serves: declared families, contiguous blocks, names, label quoting and
//! escapes, float values, `_total` counters, and cumulative histograms that end in `+Inf`.

use std::collections::BTreeMap;

/// Labels of a series without `le`, sorted.
type Labels = Vec<(String, String)>;

/// A parsed text exposition: samples by metric name, each with its labels and value.
#[derive(Debug, Default)]
pub(crate) struct Exposition {
    pub types: BTreeMap<String, String>,
    pub samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Exposition {
    /// Parses strictly: every sample belongs to a family declared by `# TYPE` (with `# HELP`)
    /// before it, families are contiguous, names and labels are valid, values are floats,
    /// histograms have cumulative `le` buckets ending in `+Inf` equal to `_count`.
    pub(crate) fn parse(text: &str) -> Result<Exposition, String> {
        let mut out = Exposition::default();
        let mut helped = std::collections::BTreeSet::new();
        let mut current: Option<String> = None;
        let mut finished = std::collections::BTreeSet::new();
        if !text.ends_with('\n') {
            return Err("must end with a newline".into());
        }
        for (n, line) in text.lines().enumerate() {
            let err = |m: &str| format!("line {}: {m}: {line:?}", n + 1);
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or("");
                valid_name(name).map_err(|e| err(&e))?;
                if !helped.insert(name.to_owned()) {
                    return Err(err("second HELP"));
                }
                continue;
            }
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut parts = rest.split(' ');
                let (name, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                valid_name(name).map_err(|e| err(&e))?;
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                    return Err(err("unknown type"));
                }
                if out.types.insert(name.to_owned(), kind.to_owned()).is_some() {
                    return Err(err("second TYPE"));
                }
                if !helped.contains(name) {
                    return Err(err("TYPE without HELP"));
                }
                if let Some(prev) = current.replace(name.to_owned()) {
                    finished.insert(prev);
                }
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                return Err(err("unexpected comment or blank line"));
            }
            let (name, labels, value) = parse_sample(line).map_err(|e| err(&e))?;
            let family = family_of(&name, &out.types);
            if current.as_deref() != Some(family.as_str()) || finished.contains(&family) {
                return Err(err("sample outside its family's block"));
            }
            if out.types[&family] == "counter" && !name.ends_with("_total") {
                return Err(err("counter without _total"));
            }
            out.samples.push((name, labels, value));
        }
        out.check_histograms()?;
        Ok(out)
    }

    fn check_histograms(&self) -> Result<(), String> {
        for (family, kind) in &self.types {
            if kind != "histogram" {
                continue;
            }
            // Group buckets by their labels without `le`.
            let mut series: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
            for (name, labels, v) in &self.samples {
                if *name != format!("{family}_bucket") {
                    continue;
                }
                let le = labels.get("le").ok_or("bucket without le")?;
                let le: f64 = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().map_err(|_| format!("bad le {le}"))?
                };
                let key = labels
                    .iter()
                    .filter(|(k, _)| *k != "le")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                series.entry(key).or_default().push((le, *v));
            }
            for (key, buckets) in series {
                let labels: BTreeMap<String, String> = key.into_iter().collect();
                let sorted = buckets
                    .windows(2)
                    .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1);
                if !sorted || buckets.last().map(|b| b.0) != Some(f64::INFINITY) {
                    return Err(format!(
                        "{family} {labels:?}: buckets not cumulative to +Inf"
                    ));
                }
                let count = self.value(&format!("{family}_count"), &labels);
                if count != Some(buckets[buckets.len() - 1].1) {
                    return Err(format!("{family} {labels:?}: +Inf bucket != _count"));
                }
                if self.value(&format!("{family}_sum"), &labels).is_none() {
                    return Err(format!("{family} {labels:?}: no _sum"));
                }
            }
        }
        Ok(())
    }

    /// The value of the sample with exactly these labels.
    pub(crate) fn value(&self, name: &str, labels: &BTreeMap<String, String>) -> Option<f64> {
        self.samples
            .iter()
            .find(|(n, l, _)| n == name && l == labels)
            .map(|s| s.2)
    }

    /// Sum of the samples of `name` whose labels include every pair of `with`.
    pub(crate) fn sum(&self, name: &str, with: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && with
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.2)
            .sum()
    }

    pub(crate) fn has(&self, name: &str) -> bool {
        self.samples.iter().any(|s| s.0 == name)
    }
}

fn family_of(name: &str, types: &BTreeMap<String, String>) -> String {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(base) = name.strip_suffix(suffix)
            && types.get(base).is_some_and(|t| t == "histogram")
        {
            return base.to_owned();
        }
    }
    name.to_owned()
}

fn valid_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':');
    if ok {
        Ok(())
    } else {
        Err(format!("bad metric name {name:?}"))
    }
}

type Sample = (String, BTreeMap<String, String>, f64);

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line
        .find(['{', ' '])
        .ok_or("no value after the metric name")?;
    let name = &line[..name_end];
    valid_name(name)?;
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(mut r) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = r.strip_prefix('}') {
                r = after;
                break;
            }
            let eq = r.find('=').ok_or("label without =")?;
            let key = &r[..eq];
            if key.is_empty()
                || key.starts_with("__")
                || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(format!("bad label name {key:?}"));
            }
            r = r[eq + 1..]
                .strip_prefix('"')
                .ok_or("label value not quoted")?;
            let mut value = String::new();
            let mut chars = r.char_indices();
            let end = loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, c @ ('\\' | '"'))) => value.push(c),
                        _ => return Err("bad escape".into()),
                    },
                    Some((i, '"')) => break i,
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value".into()),
                }
            };
            if labels.insert(key.to_owned(), value).is_some() {
                return Err(format!("label {key} twice"));
            }
            r = &r[end + 1..];
            r = r.strip_prefix(',').unwrap_or(r);
        }
        rest = r;
    }
    let value = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let value: f64 = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse().map_err(|_| format!("bad value {v:?}"))?,
    };
    Ok((name.to_owned(), labels, value))
}

#[test]
fn the_exposition_parser_rejects_what_prometheus_rejects() {
    let good = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"q\\\"\"} 1\n";
    assert!(Exposition::parse(good).is_ok());
    for bad in [
        "a_total 1\n",                                                          // no TYPE
        "# HELP a_total A.\n# TYPE a_total counter\na_total{x=q} 1\n",          // unquoted
        "# HELP a A.\n# TYPE a counter\na 1\n", // counter without _total
        "# HELP a A.\n# TYPE a gauge\na one\n", // value
        "# HELP a A.\n# TYPE a gauge\n# HELP b B.\n# TYPE b gauge\nb 1\na 1\n", // interleaved
        "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n",
    ] {
        assert!(Exposition::parse(bad).is_err(), "accepted {bad:?}");
    }
}
