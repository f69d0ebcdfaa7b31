//! Bearer tokens for the API's writes, compared in constant time.

use axum::http::{header, HeaderMap, StatusCode};
use sha2::{Digest, Sha256};

use super::ApiError;

/// A write token. Only its digest is kept, so comparing never depends on
/// where the first differing byte is, nor on the token's length.
#[derive(Clone)]
pub struct Token {
    digest: [u8; 32],
}

impl Token {
    /// Refuses an empty token (after trimming the file's newline).
    pub fn new(text: &str) -> Result<Token, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("the API token is empty".into());
        }
        if t.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("the API token must be one word without spaces".into());
        }
        Ok(Token { digest: digest(t) })
    }

    fn matches(&self, given: &str) -> bool {
        let d = digest(given);
        self.digest.iter().zip(d.iter()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Checks `Authorization: Bearer TOKEN`: 401 without credentials, 403 with
/// wrong ones or when the server has no token (writes disabled).
pub fn require(token: Option<&Token>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(token) = token else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "writes are disabled: start the server with --token-file or PHANTOMC_TOKEN",
        ));
    };
    let given = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer_credentials);
    match given {
        None => Err(ApiError::new(StatusCode::UNAUTHORIZED, "this endpoint needs `Authorization: Bearer TOKEN`")),
        Some(g) if token.matches(g.trim()) => Ok(()),
        Some(_) => Err(ApiError::new(StatusCode::FORBIDDEN, "wrong token")),
    }
}

/// Refuses a write that a web page of another origin sent: browsers name
/// the page's origin (`Origin`, on every POST) and say whether the request
/// crosses sites (`Sec-Fetch-Site`). Such a page cannot attach the bearer
/// token either; this refuses it before the token is even looked at, and
/// keeps the dashboard's writes same-origin. Tools like curl send neither
/// header and are judged by the token alone.
pub fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let text = |name: header::HeaderName| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));
    if let Some(site) = text(header::HeaderName::from_static("sec-fetch-site")) {
        if !matches!(site, "same-origin" | "none") {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("cross-origin write refused (Sec-Fetch-Site: {site})"),
            ));
        }
    }
    if let Some(origin) = text(header::ORIGIN) {
        let host = text(header::HOST).unwrap_or("");
        let own = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"))
            .is_some_and(|rest| !host.is_empty() && rest.eq_ignore_ascii_case(host));
        if !own {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("cross-origin write refused: Origin {origin} is not this server ({host})"),
            ));
        }
    }
    Ok(())
}

/// The credentials of a `Bearer` header; the scheme name is case-insensitive
/// (RFC 7235, section 2.1).
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, rest) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(rest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, a.parse().expect("header"));
        }
        h
    }

    #[test]
    fn bearer_token_checks() {
        let t = Token::new("s3cret\n").expect("token");
        assert!(require(Some(&t), &headers(Some("Bearer s3cret"))).is_ok());
        assert_eq!(require(Some(&t), &headers(None)).map_err(|e| e.status), Err(StatusCode::UNAUTHORIZED));
        assert_eq!(
            require(Some(&t), &headers(Some("Basic s3cret"))).map_err(|e| e.status),
            Err(StatusCode::UNAUTHORIZED)
        );
        assert_eq!(require(Some(&t), &headers(Some("Bearer s3cre"))).map_err(|e| e.status), Err(StatusCode::FORBIDDEN));
        assert_eq!(require(None, &headers(Some("Bearer s3cret"))).map_err(|e| e.status), Err(StatusCode::FORBIDDEN));
        for scheme in ["bearer", "BEARER", "BeArEr"] {
            assert!(require(Some(&t), &headers(Some(&format!("{scheme} s3cret")))).is_ok(), "{scheme}");
        }
        assert_eq!(
            require(Some(&t), &headers(Some("Bearers3cret"))).map_err(|e| e.status),
            Err(StatusCode::UNAUTHORIZED)
        );
        assert!(Token::new(" \n").is_err());
        assert!(Token::new("two words").is_err());
    }

    fn with(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(header::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    #[test]
    fn writes_from_another_origin_are_refused() {
        let json = ("content-type", "application/json");
        let host = ("host", "127.0.0.1:9180");
        assert!(same_origin(&with(&[json, host])).is_ok(), "curl: no Origin");
        assert!(same_origin(&with(&[("content-type", "application/x-www-form-urlencoded"), host])).is_ok(), "curl -d");
        let page = [json, host, ("origin", "http://127.0.0.1:9180"), ("sec-fetch-site", "same-origin")];
        assert!(same_origin(&with(&page)).is_ok(), "the dashboard");
        let status = |h: &[(&str, &str)]| same_origin(&with(h)).map_err(|e| e.status);
        let form = [("content-type", "application/x-www-form-urlencoded"), host, ("origin", "http://evil.example")];
        assert_eq!(status(&form), Err(StatusCode::FORBIDDEN), "a form on another site");
        assert_eq!(status(&[json, host, ("origin", "http://evil.example")]), Err(StatusCode::FORBIDDEN));
        assert_eq!(status(&[json, host, ("origin", "null")]), Err(StatusCode::FORBIDDEN));
        assert_eq!(status(&[json, host, ("origin", "http://127.0.0.1:9181")]), Err(StatusCode::FORBIDDEN));
        assert_eq!(status(&[json, host, ("sec-fetch-site", "cross-site")]), Err(StatusCode::FORBIDDEN));
        assert_eq!(status(&[json, host, ("sec-fetch-site", "same-site")]), Err(StatusCode::FORBIDDEN));
    }
}
