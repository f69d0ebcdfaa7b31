//! Provider API responses -> address lines, checked against each provider's
//! documented shape. Errors use the provider's own field names
//! (`data[3].ipAddress`), so a schema change reads as one.

use serde_json::Value;

use crate::policy::ast::Date;

/// Drops entries a provider rates or dates below the feed's limits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    pub min_confidence: Option<u8>,
    /// Unix time: entries last seen before it are dropped.
    pub not_before: Option<u64>,
    /// Unix time now (for OTX `expiration`).
    pub now: u64,
}

/// Addresses from one response, as lines for the plain format.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Page {
    pub lines: Vec<String>,
    /// Entries dropped by the filter.
    pub filtered: usize,
    /// The next page's URL (OTX `next`).
    pub next: Option<String>,
}

/// A response that is not what the provider documents.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("{provider} response is not complete JSON (line {line}, column {column}: {message}); a cut-off download?")]
    Json { provider: &'static str, line: usize, column: usize, message: String },
    #[error("{provider} response: `{field}` {problem}")]
    Field { provider: &'static str, field: String, problem: String },
}

fn json(provider: &'static str, text: &str) -> Result<Value, SchemaError> {
    serde_json::from_str(text).map_err(|e| {
        let message = e.to_string();
        let message = message.rsplit_once(" at line ").map_or(message.as_str(), |(m, _)| m).to_string();
        SchemaError::Json { provider, line: e.line(), column: e.column(), message }
    })
}

fn field_error(provider: &'static str, field: impl Into<String>, problem: impl Into<String>) -> SchemaError {
    SchemaError::Field { provider, field: field.into(), problem: problem.into() }
}

fn kind(v: Option<&Value>) -> &'static str {
    match v {
        None => "is missing",
        Some(Value::Null) => "is null",
        Some(Value::Bool(_)) => "is a boolean",
        Some(Value::Number(_)) => "is a number",
        Some(Value::String(_)) => "is a string",
        Some(Value::Array(_)) => "is a list",
        Some(Value::Object(_)) => "is an object",
    }
}

const ABUSEIPDB: &str = "AbuseIPDB";

/// AbuseIPDB APIv2 `GET /api/v2/blacklist` (JSON):
/// `{"meta": {"generatedAt": ...}, "data": [{"ipAddress", "abuseConfidenceScore", "lastReportedAt", ...}]}`.
pub fn abuseipdb(text: &str, filter: &Filter) -> Result<Page, SchemaError> {
    let v = json(ABUSEIPDB, text)?;
    let Some(data) = v.get("data").and_then(Value::as_array) else {
        return Err(field_error(ABUSEIPDB, "data", format!("{} (expected a list of entries)", kind(v.get("data")))));
    };
    let mut page = Page::default();
    for (i, entry) in data.iter().enumerate() {
        let at = |f: &str| format!("data[{i}].{f}");
        let ip = entry.get("ipAddress");
        let Some(ip) = ip.and_then(Value::as_str) else {
            return Err(field_error(ABUSEIPDB, at("ipAddress"), format!("{} (expected an address)", kind(ip))));
        };
        let score = entry.get("abuseConfidenceScore");
        let Some(score) = score.and_then(Value::as_u64).filter(|&s| s <= 100) else {
            return Err(field_error(
                ABUSEIPDB,
                at("abuseConfidenceScore"),
                format!("{} (expected 0-100)", kind(score)),
            ));
        };
        let seen = match entry.get("lastReportedAt") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(
                unix_time(s)
                    .ok_or_else(|| field_error(ABUSEIPDB, at("lastReportedAt"), format!("{s:?} is not a date")))?,
            ),
            other => return Err(field_error(ABUSEIPDB, at("lastReportedAt"), kind(other))),
        };
        let too_low = filter.min_confidence.is_some_and(|m| score < u64::from(m));
        let too_old = matches!((filter.not_before, seen), (Some(nb), Some(t)) if t < nb);
        if too_low || too_old {
            page.filtered += 1;
        } else {
            page.lines.push(ip.to_string());
        }
    }
    Ok(page)
}

const OTX: &str = "OTX";

/// One page of OTX `GET /api/v1/pulses/subscribed`:
/// `{"count": N, "next": URL|null, "results": [{"id", "name", "modified", "indicators": [{"indicator", "type", "expiration", "is_active"}]}]}`.
/// Keeps IPv4, IPv6 and CIDR indicators that are active and unexpired.
pub fn otx_page(text: &str, filter: &Filter) -> Result<Page, SchemaError> {
    let v = json(OTX, text)?;
    let Some(results) = v.get("results").and_then(Value::as_array) else {
        return Err(field_error(OTX, "results", format!("{} (expected a list of pulses)", kind(v.get("results")))));
    };
    let next = match v.get("next") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::String(_)) => None,
        other => return Err(field_error(OTX, "next", format!("{} (expected a URL or null)", kind(other)))),
    };
    let mut page = Page { next, ..Page::default() };
    for (p, pulse) in results.iter().enumerate() {
        let indicators = pulse.get("indicators");
        let Some(indicators) = indicators.and_then(Value::as_array) else {
            return Err(field_error(
                OTX,
                format!("results[{p}].indicators"),
                format!("{} (expected a list)", kind(indicators)),
            ));
        };
        let modified = pulse.get("modified").and_then(Value::as_str).and_then(unix_time);
        let pulse_old = matches!((filter.not_before, modified), (Some(nb), Some(t)) if t < nb);
        for (i, ind) in indicators.iter().enumerate() {
            let at = |f: &str| format!("results[{p}].indicators[{i}].{f}");
            let kind_of = ind.get("type");
            let Some(kind_of) = kind_of.and_then(Value::as_str) else {
                return Err(field_error(OTX, at("type"), kind(kind_of)));
            };
            if !matches!(kind_of, "IPv4" | "IPv6" | "CIDR") {
                continue;
            }
            let value = ind.get("indicator");
            let Some(value) = value.and_then(Value::as_str) else {
                return Err(field_error(OTX, at("indicator"), kind(value)));
            };
            let expired =
                ind.get("expiration").and_then(Value::as_str).and_then(unix_time).is_some_and(|t| t <= filter.now);
            let inactive = ind.get("is_active").and_then(Value::as_i64) == Some(0);
            if pulse_old || expired || inactive {
                page.filtered += 1;
            } else {
                page.lines.push(value.to_string());
            }
        }
    }
    Ok(page)
}

/// RFC 3339 / ISO 8601 `2026-11-23T14:02:11+00:00`, `...Z` or OTX's
/// `2026-11-23T14:02:11.591000` (UTC): Unix seconds.
pub fn unix_time(s: &str) -> Option<u64> {
    let s = s.trim();
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let date =
        Date::new(u16::try_from(num(0..4)?).ok()?, u8::try_from(num(5..7)?).ok()?, u8::try_from(num(8..10)?).ok()?)?;
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if s.get(4..5)? != "-" || s.get(10..11).is_some_and(|t| t != "T" && t != " ") {
        return None;
    }
    let mut rest = s.get(19..)?;
    if let Some(frac) = rest.strip_prefix('.') {
        rest = frac.trim_start_matches(|c: char| c.is_ascii_digit());
    }
    let offset = match rest {
        "" | "Z" | "z" => 0,
        tz => {
            let sign = match tz.get(..1)? {
                "+" => 1,
                "-" => -1,
                _ => return None,
            };
            let (oh, om) = (tz.get(1..3)?.parse::<i64>().ok()?, tz.get(tz.len() - 2..)?.parse::<i64>().ok()?);
            sign * (oh * 3600 + om * 60)
        }
    };
    u64::try_from(date.days() * 86400 + h * 3600 + mi * 60 + sec - offset).ok()
}

/// Unix seconds as `2026-11-23T14:02:11Z`.
pub fn rfc3339(secs: u64) -> String {
    let d = Date::from_days((secs / 86400) as i64);
    let rem = secs % 86400;
    format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", d.year, d.month, d.day, rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_in_the_providers_spellings() {
        assert_eq!(unix_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(unix_time("2026-11-23T14:02:11+00:00"), Some(1_795_442_531));
        assert_eq!(unix_time("2026-11-23T15:02:11+01:00"), Some(1_795_442_531));
        assert_eq!(unix_time("2026-11-23T14:02:11.591000"), Some(1_795_442_531));
        assert_eq!(unix_time("2000-02-29T00:00:00Z"), Some(951_782_400));
        assert_eq!(unix_time("yesterday"), None);
        for t in [0, 951_782_400, 1_795_442_531, 4_102_444_799] {
            assert_eq!(unix_time(&rfc3339(t)), Some(t));
        }
        assert_eq!(rfc3339(1_795_442_531), "2026-11-23T14:02:11Z");
    }

    #[test]
    fn abuseipdb_entries_are_filtered_by_score_and_age() {
        let text = r#"{"meta":{"generatedAt":"2026-11-23T14:00:00+00:00"},"data":[
            {"ipAddress":"198.51.100.7","countryCode":"NL","abuseConfidenceScore":100,"lastReportedAt":"2026-11-23T13:00:00+00:00"},
            {"ipAddress":"198.51.100.8","countryCode":"NL","abuseConfidenceScore":80,"lastReportedAt":"2026-11-23T13:00:00+00:00"},
            {"ipAddress":"2001:db8::9","countryCode":null,"abuseConfidenceScore":95,"lastReportedAt":"2026-10-01T00:00:00+00:00"}]}"#;
        let all = abuseipdb(text, &Filter::default()).unwrap();
        assert_eq!(all.lines, ["198.51.100.7", "198.51.100.8", "2001:db8::9"]);
        let f = Filter { min_confidence: Some(90), not_before: unix_time("2026-11-01T00:00:00Z"), now: 0 };
        let some = abuseipdb(text, &f).unwrap();
        assert_eq!((some.lines.as_slice(), some.filtered), (&["198.51.100.7".to_string()][..], 2));
    }

    #[test]
    fn schema_errors_name_the_providers_fields() {
        let renamed = r#"{"data":[{"ipAddress":"192.0.2.1","abuseConfidenceScore":100},{"ip":"192.0.2.2","abuseConfidenceScore":100}]}"#;
        assert_eq!(
            abuseipdb(renamed, &Filter::default()).unwrap_err().to_string(),
            "AbuseIPDB response: `data[1].ipAddress` is missing (expected an address)"
        );
        let cut = r#"{"data":[{"ipAddress":"192.0.2.1","abuse"#;
        assert!(abuseipdb(cut, &Filter::default())
            .unwrap_err()
            .to_string()
            .starts_with("AbuseIPDB response is not complete JSON (line 1"));
        assert_eq!(
            otx_page(r#"{"results":[{"name":"x","indicators":{}}]}"#, &Filter::default()).unwrap_err().to_string(),
            "OTX response: `results[0].indicators` is an object (expected a list)"
        );
        assert_eq!(
            otx_page(r#"{"count":0}"#, &Filter::default()).unwrap_err().to_string(),
            "OTX response: `results` is missing (expected a list of pulses)"
        );
    }
}
