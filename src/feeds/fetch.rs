//! Getting a feed's text: http(s) with timeouts and a conditional GET
//! (ETag / If-Modified-Since), `file://` URLs and plain paths.

use std::path::Path;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Whole-request limit: a stalled server must not hang `feeds update`.
const TOTAL_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest body read (a million-line feed is ~20 MB).
const MAX_BODY: u64 = 512 << 20;

pub fn is_url(source: &str) -> bool {
    ["http://", "https://", "file://"].iter().any(|p| source.starts_with(p))
}

/// What the last successful fetch said, for a conditional request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Fetched {
    /// 304: the cached copy is current.
    NotModified,
    Body {
        text: String,
        validators: Validators,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    #[error("{0}: not valid UTF-8 text")]
    NotText(String),
}

pub fn fetch(source: &str, known: &Validators) -> Result<Fetched, FetchError> {
    if source.starts_with("http://") || source.starts_with("https://") {
        return http(source, known);
    }
    let path = source.strip_prefix("file://").unwrap_or(source);
    let bytes = std::fs::read(Path::new(path)).map_err(|e| FetchError::Io { path: path.to_string(), source: e })?;
    let text = String::from_utf8(bytes).map_err(|_| FetchError::NotText(path.to_string()))?;
    Ok(Fetched::Body { text, validators: Validators::default() })
}

fn http(url: &str, known: &Validators) -> Result<Fetched, FetchError> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_global(Some(TOTAL_TIMEOUT))
        .http_status_as_error(false)
        .user_agent(concat!("phantomc/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut req = agent.get(url);
    if let Some(etag) = &known.etag {
        req = req.header("If-None-Match", etag);
    }
    if let Some(lm) = &known.last_modified {
        req = req.header("If-Modified-Since", lm);
    }
    let err = |e: ureq::Error| FetchError::Http { url: url.to_string(), message: e.to_string() };
    let mut resp = req.call().map_err(err)?;
    let status = resp.status().as_u16();
    if status == 304 {
        return Ok(Fetched::NotModified);
    }
    if !(200..300).contains(&status) {
        return Err(FetchError::Status { url: url.to_string(), status });
    }
    let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
    let validators = Validators { etag: header("etag"), last_modified: header("last-modified") };
    let text = resp.body_mut().with_config().limit(MAX_BODY).read_to_string().map_err(err)?;
    Ok(Fetched::Body { text, validators })
}
