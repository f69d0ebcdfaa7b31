//! Getting a feed's text: http(s) with timeouts, a conditional GET
//! (ETag / If-Modified-Since), retries with exponential backoff that honour
//! `Retry-After`, an API key that goes only to its own host; `file://` URLs
//! and plain paths.

use std::path::Path;
use std::time::Duration;

use super::keys::Secret;
pub use crate::ir::feed_options::{is_url, Origin};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Whole-request limit: a stalled server must not hang `feeds update`.
pub const TOTAL_TIMEOUT: Duration = Duration::from_secs(120);
/// Largest body read (a million-line feed is ~20 MB).
const MAX_BODY: u64 = 512 << 20;
/// Bytes a local feed file may hold (documented in docs/guide/feeds.md).
const MAX_LOCAL_FILE: u64 = 256 << 20;
/// Redirects followed by hand for keyed requests.
const MAX_REDIRECTS: usize = 5;

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
    #[error("{url}: HTTP {status}{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Status { url: String, status: u16, detail: Option<String> },
    #[error("{url}: HTTP {status}, still after {attempts} attempts{}", retry_after.map(|s| format!("; the server asks to wait {s}s")).unwrap_or_default())]
    Busy { url: String, status: u16, attempts: usize, retry_after: Option<u64> },
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    /// The request ran out of time: not tried again within this update (a
    /// stalled server would hold `feeds update` and `watch` for minutes).
    #[error("{url}: {message}")]
    Timeout { url: String, message: String },
    #[error("{url}: {message}; the key is sent only to {origin}")]
    OffHost { url: String, origin: String, message: String },
    #[error("{0}: not valid UTF-8 text")]
    NotText(String),
}

impl FetchError {
    /// Seconds the server asked us to wait before the next try, if it did.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            FetchError::Busy { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// An HTTP GET as a provider wants it.
#[derive(Clone, Debug)]
pub struct Request {
    pub url: String,
    /// Plain headers (`Accept`).
    pub headers: Vec<(String, String)>,
    /// The key's header and value; sent only to the origin of `url`.
    pub key: Option<(String, Secret)>,
    pub timeout: Duration,
    pub retry: Retry,
}

impl Request {
    pub fn get(url: &str) -> Request {
        Request {
            url: url.to_string(),
            headers: Vec::new(),
            key: None,
            timeout: TOTAL_TIMEOUT,
            retry: Retry::default(),
        }
    }
}

/// Retries of a busy (429, 503) or unreachable server within one update.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retry {
    /// Tries in all, the first included.
    pub attempts: usize,
    /// Wait before the second try; doubled before each further one.
    pub base: Duration,
    /// A longer wait (from `Retry-After`) is not sat out: the update gives
    /// up and the next one is scheduled after it.
    pub max_wait: Duration,
}

impl Default for Retry {
    fn default() -> Retry {
        Retry { attempts: 3, base: Duration::from_secs(1), max_wait: Duration::from_secs(30) }
    }
}

pub fn fetch(source: &str, known: &Validators) -> Result<Fetched, FetchError> {
    if source.starts_with("http://") || source.starts_with("https://") {
        return http(&Request::get(source), known);
    }
    let path = source.strip_prefix("file://").unwrap_or(source);
    let bytes = crate::input::read_regular(Path::new(path), MAX_LOCAL_FILE).map_err(|e| match e {
        crate::input::InputError::Io(source) => FetchError::Io { path: path.to_string(), source },
        other => FetchError::Io { path: path.to_string(), source: std::io::Error::other(other.to_string()) },
    })?;
    let text = String::from_utf8(bytes).map_err(|_| FetchError::NotText(path.to_string()))?;
    Ok(Fetched::Body { text, validators: Validators::default() })
}

/// One GET with retries: 429 and 503 (honouring `Retry-After`) and network
/// errors are tried again after 1 s, 2 s, ...; timeouts and other statuses
/// are final.
pub fn http(req: &Request, known: &Validators) -> Result<Fetched, FetchError> {
    let mut attempt = 1;
    loop {
        let wait = req.retry.base * 2u32.saturating_pow(attempt as u32 - 1);
        let outcome = http_once(req, known);
        let wait = match &outcome {
            Err(FetchError::Busy { retry_after, .. }) => wait.max(Duration::from_secs(retry_after.unwrap_or(0))),
            Err(FetchError::Http { .. }) => wait,
            _ => return outcome,
        };
        if attempt >= req.retry.attempts || wait > req.retry.max_wait {
            return outcome.map_err(|e| match e {
                FetchError::Busy { url, status, retry_after, .. } => {
                    FetchError::Busy { url, status, attempts: attempt, retry_after }
                }
                other => other,
            });
        }
        std::thread::sleep(wait);
        attempt += 1;
    }
}

fn http_once(req: &Request, known: &Validators) -> Result<Fetched, FetchError> {
    let origin = Origin::of(&req.url);
    let redact = |text: String| match &req.key {
        Some((_, secret)) => secret.redact(&text),
        None => text,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(CONNECT_TIMEOUT))
        .timeout_global(Some(req.timeout))
        .http_status_as_error(false)
        // Keyed requests follow redirects by hand, so the key never leaves its host.
        .max_redirects(if req.key.is_some() { 0 } else { 10 })
        .max_redirects_will_error(false)
        .user_agent(concat!("phantomc/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let mut url = req.url.clone();
    for _ in 0..=MAX_REDIRECTS {
        let mut get = agent.get(&url);
        for (name, value) in &req.headers {
            get = get.header(name, value);
        }
        if let Some((header, secret)) = &req.key {
            get = get.header(header, secret.expose());
        }
        if let Some(etag) = &known.etag {
            get = get.header("If-None-Match", etag);
        }
        if let Some(lm) = &known.last_modified {
            get = get.header("If-Modified-Since", lm);
        }
        let err = |e: ureq::Error| match e {
            ureq::Error::Timeout(_) => FetchError::Timeout { url: url.clone(), message: redact(e.to_string()) },
            e => FetchError::Http { url: url.clone(), message: redact(e.to_string()) },
        };
        let mut resp = get.call().map_err(err)?;
        let status = resp.status().as_u16();
        let header = |name: &str| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        if req.key.is_some() && (300..400).contains(&status) && status != 304 {
            let Some(location) = header("location") else {
                return Err(FetchError::Status { url, status, detail: Some("redirect without a Location".into()) });
            };
            let next = resolve(&url, &location);
            match (&origin, Origin::of(&next)) {
                (Some(o), Some(n)) if *o == n => {
                    url = next;
                    continue;
                }
                (o, _) => {
                    return Err(FetchError::OffHost {
                        url,
                        origin: o.as_ref().map_or_else(String::new, Origin::to_string),
                        message: format!("redirected to {}", Origin::of(&next).map_or(next, |n| n.to_string())),
                    })
                }
            }
        }
        if status == 304 {
            return Ok(Fetched::NotModified);
        }
        if status == 429 || status == 503 {
            let retry_after = header("retry-after").and_then(|v| retry_after_secs(&v, std::time::SystemTime::now()));
            return Err(FetchError::Busy { url, status, attempts: 1, retry_after });
        }
        if !(200..300).contains(&status) {
            // An API says why in its body (`{"errors": [{"detail": ...}]}`); keep a line of it.
            let body = resp.body_mut().with_config().limit(4096).read_to_string().unwrap_or_default();
            let detail = error_detail(&body).map(redact);
            return Err(FetchError::Status { url, status, detail });
        }
        let validators = Validators { etag: header("etag"), last_modified: header("last-modified") };
        let text = resp.body_mut().with_config().limit(MAX_BODY).read_to_string().map_err(err)?;
        return Ok(Fetched::Body { text, validators });
    }
    Err(FetchError::Http { url, message: format!("more than {MAX_REDIRECTS} redirects") })
}

/// `Retry-After`: seconds, or an HTTP date.
pub fn retry_after_secs(value: &str, now: std::time::SystemTime) -> Option<u64> {
    if let Ok(secs) = value.trim().parse::<u64>() {
        return Some(secs);
    }
    let at = httpdate::parse_http_date(value.trim()).ok()?;
    Some(at.duration_since(now).map_or(0, |d| d.as_secs()))
}

/// The short reason in an error body: a JSON `detail`/`message`/`error`
/// field, else the first line of text (not an HTML page).
fn error_detail(body: &str) -> Option<String> {
    let from_json = serde_json::from_str::<serde_json::Value>(body).ok().and_then(|v| {
        let first = v.get("errors").and_then(|e| e.get(0)).unwrap_or(&v);
        ["detail", "message", "error"].iter().find_map(|k| first.get(k)?.as_str().map(str::to_string))
    });
    let text = from_json.or_else(|| {
        let line = body.lines().map(str::trim).find(|l| !l.is_empty())?;
        (!line.starts_with('<')).then(|| line.to_string())
    })?;
    Some(text.chars().take(200).collect())
}

/// A `Location` (absolute, or a path on the same server) as a URL.
pub fn resolve(base: &str, location: &str) -> String {
    if location.contains("://") {
        return location.to_string();
    }
    let origin_end = base.find("://").map_or(0, |i| i + 3);
    let host_end = base[origin_end..].find('/').map_or(base.len(), |i| origin_end + i);
    if location.starts_with('/') {
        format!("{}{location}", &base[..host_end])
    } else {
        let dir_end = base.rfind('/').filter(|&i| i >= host_end).map_or(base.len(), |i| i + 1);
        let dir = &base[..dir_end];
        if dir.ends_with('/') {
            format!("{dir}{location}")
        } else {
            format!("{dir}/{location}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_feed_must_be_a_regular_file() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("feed.txt");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        // No writer ever opens the FIFO: a blocking open would hang here.
        let err = fetch(&format!("file://{}", fifo.display()), &Validators::default()).unwrap_err();
        assert!(err.to_string().contains("it is a FIFO, not a regular file"), "{err}");
        let err = fetch("/dev/zero", &Validators::default()).unwrap_err();
        assert!(err.to_string().contains("character device"), "{err}");
        std::fs::write(fifo.with_extension("ok"), "192.0.2.1\n").unwrap();
        assert!(fetch(fifo.with_extension("ok").to_str().unwrap(), &Validators::default()).is_ok());
    }

    #[test]
    fn origins_compare_scheme_host_and_port() {
        let a = Origin::of("https://otx.alienvault.com/api/v1/pulses/subscribed?page=2").unwrap();
        assert_eq!(a.to_string(), "https://otx.alienvault.com:443");
        assert_eq!(Origin::of("https://OTX.alienvault.com:443/x"), Some(a.clone()));
        assert_ne!(Origin::of("http://otx.alienvault.com/x"), Some(a));
        assert!(Origin::of("http://127.0.0.1:8080/").unwrap().is_loopback());
        assert!(Origin::of("http://[::1]:80/").unwrap().is_loopback());
        assert!(!Origin::of("http://192.0.2.1/").unwrap().is_loopback());
    }

    #[test]
    fn retry_after_is_seconds_or_a_date() {
        let now = httpdate::parse_http_date("Mon, 23 Nov 2026 14:00:00 GMT").unwrap();
        assert_eq!(retry_after_secs("120", now), Some(120));
        assert_eq!(retry_after_secs("Mon, 23 Nov 2026 14:02:00 GMT", now), Some(120));
        assert_eq!(retry_after_secs("soon", now), None);
    }

    #[test]
    fn locations_resolve_against_the_request() {
        assert_eq!(resolve("https://h/a/b?x=1", "https://g/c"), "https://g/c");
        assert_eq!(resolve("https://h/a/b?x=1", "/c?p=2"), "https://h/c?p=2");
        assert_eq!(resolve("https://h/a/b", "c"), "https://h/a/c");
        assert_eq!(
            error_detail(r#"{"errors":[{"detail":"Authentication failed.","status":401}]}"#).as_deref(),
            Some("Authentication failed.")
        );
        assert_eq!(error_detail("<html>nope</html>"), None);
    }
}
