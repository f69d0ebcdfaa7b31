//! Feed formats: where the address is on each line (or in the JSON).
//!
//! Line formats hand [`super::normalize`] one candidate token per line; the
//! OTX pulse JSON is parsed whole and yields its IP indicators.

pub use crate::ir::feed_options::Format;

/// The address token of one line of a line format, `None` for blank and
/// comment lines. `column` is 1-based (CSV only).
pub fn line_token(format: Format, line: &str, column: usize) -> Option<&str> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') || line.starts_with(';') || line.starts_with("//") {
        return None;
    }
    match format {
        Format::Csv => Some(csv_field(line, column)),
        // A JSON line without a cidr is the trailing metadata record.
        Format::Spamhaus if line.starts_with('{') => json_cidr(line),
        // Plain, Spamhaus and netset differ only in their comments: the
        // address is the first word, before any trailing `;` or `#` comment.
        _ => {
            let end = line.find([';', '#']).unwrap_or(line.len());
            let token = line[..end].split_whitespace().next().unwrap_or("");
            Some(token)
        }
    }
}

/// The `"cidr"` value of one Spamhaus JSON line (no full JSON parse: a
/// million of these must be fast).
fn json_cidr(line: &str) -> Option<&str> {
    let rest = &line[line.find("\"cidr\"")? + 6..];
    let rest = rest.trim_start().strip_prefix(':')?.trim_start().strip_prefix('"')?;
    Some(&rest[..rest.find('"').unwrap_or(rest.len())])
}

/// Field `column` (1-based) of a CSV line, unquoted; "" when missing.
fn csv_field(line: &str, column: usize) -> &str {
    let mut fields = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                fields.push(&line[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    fields.push(&line[start..]);
    fields.get(column.saturating_sub(1)).map_or("", |f| f.trim().trim_matches('"').trim())
}

/// Why a whole feed was refused before looking at its lines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    #[error("not a feed: looks like an HTML page (an error page or a login portal?)")]
    Html,
    #[error("not a feed: binary data (NUL byte at byte offset {0})")]
    Binary(usize),
    #[error("bad OTX JSON at line {line}, column {column}: {message}")]
    Json { line: usize, column: usize, message: String },
    #[error("OTX JSON has no `indicators` list")]
    NoIndicators,
}

/// Refuses text that is obviously not an address list.
pub fn sniff(text: &str) -> Result<(), FormatError> {
    if let Some(pos) = text.bytes().position(|b| b == 0) {
        return Err(FormatError::Binary(pos));
    }
    let head = text.trim_start().get(..64).unwrap_or(text.trim_start()).to_ascii_lowercase();
    if head.starts_with("<!doctype html")
        || head.starts_with("<html")
        || head.starts_with("<?xml")
        || head.starts_with("<head")
    {
        return Err(FormatError::Html);
    }
    Ok(())
}

/// IP indicators of an OTX pulse (`{"indicators": [{"type": "IPv4", "indicator": ...}]}`),
/// or of a list of pulses, or of an export `{"results": [pulse, ...]}`.
/// Each comes with the line of the JSON text it was found on.
pub fn otx_indicators(text: &str) -> Result<Vec<(usize, String)>, FormatError> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        let message = e.to_string();
        // serde_json appends the position, which the error shows already.
        let message = message.rsplit_once(" at line ").map_or(message.as_str(), |(m, _)| m).to_string();
        FormatError::Json { line: e.line(), column: e.column(), message }
    })?;
    let pulses: Vec<&serde_json::Value> = match &v {
        serde_json::Value::Array(items) => items.iter().collect(),
        serde_json::Value::Object(o) if o.contains_key("results") => {
            o["results"].as_array().into_iter().flatten().collect()
        }
        other => vec![other],
    };
    let mut out = Vec::new();
    let mut any_list = false;
    // serde_json does not keep positions: find each indicator's line by
    // scanning forward for its text, in document order.
    let mut cursor = 0;
    for pulse in pulses {
        let Some(list) = pulse.get("indicators").and_then(|i| i.as_array()) else { continue };
        any_list = true;
        for ind in list {
            let kind = ind.get("type").and_then(|t| t.as_str()).unwrap_or("");
            if !matches!(kind, "IPv4" | "IPv6" | "CIDR") {
                continue;
            }
            let Some(value) = ind.get("indicator").and_then(|t| t.as_str()) else { continue };
            if let Some(pos) = text[cursor..].find(value) {
                cursor += pos;
            }
            let line = text[..cursor].matches('\n').count() + 1;
            out.push((line, value.to_string()));
        }
    }
    if !any_list {
        return Err(FormatError::NoIndicators);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_skip_comments_and_trailing_notes() {
        assert_eq!(line_token(Format::Spamhaus, "1.10.16.0/20 ; SBL256894", 1), Some("1.10.16.0/20"));
        assert_eq!(line_token(Format::Spamhaus, "; Spamhaus DROP List 2026/11/23", 1), None);
        assert_eq!(line_token(Format::Netset, "# ipv4 hash:net ipset", 1), None);
        assert_eq!(line_token(Format::Plain, "  203.0.113.7   # scanner", 1), Some("203.0.113.7"));
        assert_eq!(line_token(Format::Plain, "", 1), None);
        assert_eq!(
            line_token(Format::Spamhaus, r#"{"cidr":"1.10.16.0/20","sblid":"SBL256894","rir":"apnic"}"#, 1),
            Some("1.10.16.0/20")
        );
        assert_eq!(line_token(Format::Spamhaus, r#"{"type":"metadata","timestamp":1763906531,"size":1431}"#, 1), None);
    }

    #[test]
    fn csv_columns_are_one_based_and_unquoted() {
        assert_eq!(line_token(Format::Csv, r#"2026-11-01,"198.51.100.9",ssh,"a, b""#, 2), Some("198.51.100.9"));
        assert_eq!(line_token(Format::Csv, "a,b", 5), Some(""));
    }

    #[test]
    fn html_and_binary_are_not_feeds() {
        assert_eq!(sniff("\n<!DOCTYPE html><html>"), Err(FormatError::Html));
        assert_eq!(sniff("1.2.3.4\n\0\0"), Err(FormatError::Binary(8)));
        assert_eq!(sniff("1.2.3.4\n"), Ok(()));
    }
}
