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
}
