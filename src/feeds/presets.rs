//! Provider presets as requests: the catalog ([`crate::ir::providers`]) with
//! the query parameters each provider's API wants.

pub use crate::ir::providers::*;

/// `url` with the preset's query parameters and the confidence filter.
pub fn with_query(url: &str, preset: &Preset, min_confidence: Option<u8>) -> String {
    let mut params: Vec<(String, String)> = preset.query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    if let (Some(c), Some(n)) = (preset.confidence, min_confidence) {
        params.push((c.param.to_string(), n.to_string()));
    }
    add_query(url, &params)
}

/// Appends `k=v` pairs (already URL-safe) to a URL, keeping any it has.
pub fn add_query(url: &str, params: &[(String, String)]) -> String {
    let mut out = url.to_string();
    for (k, v) in params {
        if out.contains(&format!("?{k}=")) || out.contains(&format!("&{k}=")) {
            continue; // the URL's own value wins
        }
        out.push(if out.contains('?') { '&' } else { '?' });
        out.push_str(&format!("{k}={v}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_added_once() {
        let abuse = find("abuseipdb").unwrap();
        assert_eq!(
            with_query(abuse.urls[0], abuse, Some(90)),
            "https://api.abuseipdb.com/api/v2/blacklist?limit=10000&confidenceMinimum=90"
        );
        assert_eq!(with_query("http://127.0.0.1:9/b?limit=5", abuse, None), "http://127.0.0.1:9/b?limit=5");
    }
}
