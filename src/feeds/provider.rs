//! Downloading one feed the way its provider wants it: the key in its
//! header (read fresh, sent only to the feed's own host), every page, each
//! response checked and filtered, joined into the line text the normalizer
//! reads. One URL at a time: [`super::parts`] joins a preset's several.

use std::collections::HashSet;

use super::fetch::{self, FetchError, Fetched, Origin, Request, Validators};
use super::keys::Secret;
use super::presets::{self, Auth, Decode};
use super::responses::{self, Filter, Page};
use super::FeedConfig;

/// Pages followed at most (OTX: 50 pulses a page).
pub const MAX_PAGES: usize = 500;

/// Why a download failed. The message never holds the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadError {
    pub message: String,
    /// Seconds the provider asked us to wait (429/503 `Retry-After`).
    pub retry_after: Option<u64>,
    /// The provider answered 429 or 503.
    pub busy: bool,
}

impl std::fmt::Display for DownloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl DownloadError {
    fn from_fetch(e: FetchError, key: Option<&Secret>) -> DownloadError {
        let retry_after = e.retry_after();
        let busy = matches!(e, FetchError::Busy { .. });
        let mut message = e.to_string();
        if let FetchError::Status { status: 401 | 403, .. } = e {
            message.push_str(" (the provider refused the key: check it, and that it may use this API)");
        }
        DownloadError { message: key.map_or(message.clone(), |k| k.redact(&message)), retry_after, busy }
    }

    fn plain(message: String) -> DownloadError {
        DownloadError { message, retry_after: None, busy: false }
    }
}

/// A feed's text as one document, and notes on what was dropped.
#[derive(Debug, PartialEq, Eq)]
pub struct Download {
    pub fetched: Fetched,
    pub notes: Vec<String>,
}

/// The key header and value a feed sends, read now.
fn key_header(cfg: &FeedConfig) -> Result<Option<(String, Secret)>, DownloadError> {
    let Some(source) = &cfg.key else { return Ok(None) };
    let secret = source.read().map_err(|e| DownloadError::plain(format!("API key: {e}")))?;
    let auth = cfg.provider.map_or(Auth::None, |p| p.auth);
    Ok(Some(match (&cfg.key_header, auth) {
        (Some(h), _) => (h.clone(), secret),
        (None, Auth::Basic) => ("Authorization".to_string(), secret.basic()),
        (None, Auth::Header(h)) => (h.to_string(), secret),
        (None, Auth::None) => {
            return Err(DownloadError::plain("API key: no header to send it in (add `key-header`)".into()))
        }
    }))
}

/// Downloads one of a feed's URLs (`cfg.source`, or one of
/// `cfg.more_sources`) with its pages. `known` makes the request conditional
/// when the URL is one plain request (no pages).
pub fn download(cfg: &FeedConfig, url: &str, known: &Validators, now: u64) -> Result<Download, DownloadError> {
    let key = key_header(cfg)?;
    let redact = |m: String| key.as_ref().map_or(m.clone(), |(_, k)| k.redact(&m));
    let decode = cfg.provider.map_or(Decode::Lines, |p| p.decode);
    let filter = Filter {
        min_confidence: cfg.min_confidence,
        not_before: cfg.max_age.map(|a| now.saturating_sub(a.as_secs())),
        now,
    };
    if key.is_none() && decode == Decode::Lines {
        return fetch::fetch(url, known)
            .map(|fetched| Download { fetched, notes: Vec::new() })
            .map_err(|e| DownloadError::from_fetch(e, None));
    }
    let origin = Origin::of(url);
    let template = Request {
        headers: cfg
            .provider
            .and_then(|p| p.accept)
            .map(|a| ("Accept".to_string(), a.to_string()))
            .into_iter()
            .collect(),
        key: key.clone(),
        ..Request::get(url)
    };
    let conditional = decode != Decode::OtxPulses;
    let mut first = url.to_string();
    if let (Decode::OtxPulses, Some(nb)) = (decode, filter.not_before) {
        first = presets::add_query(&first, &[("modified_since".into(), responses::rfc3339(nb))]);
    }
    let mut queue = vec![first];
    let mut seen = HashSet::new();
    let (mut text, mut filtered, mut pages) = (String::new(), 0, 0);
    let mut validators = Validators::default();
    while let Some(page_url) = queue.pop() {
        pages += 1;
        if pages > MAX_PAGES || !seen.insert(page_url.clone()) {
            return Err(DownloadError::plain(format!(
                "{page_url}: pagination does not end (more than {MAX_PAGES} pages, or a page links back)"
            )));
        }
        if key.is_some() && Origin::of(&page_url) != origin {
            let to = Origin::of(&page_url).map_or(page_url.clone(), |o| o.to_string());
            let home = origin.as_ref().map_or_else(String::new, Origin::to_string);
            return Err(DownloadError::plain(format!(
                "{url}: the next page is on another host ({to}); the key is sent only to {home}"
            )));
        }
        let req = Request { url: page_url.clone(), ..template.clone() };
        let none = Validators::default();
        let body = match fetch::http(&req, if conditional { known } else { &none }) {
            Ok(Fetched::NotModified) => return Ok(Download { fetched: Fetched::NotModified, notes: Vec::new() }),
            Ok(Fetched::Body { text, validators: v }) => {
                validators = v;
                text
            }
            Err(e) => return Err(DownloadError::from_fetch(e, key.as_ref().map(|(_, k)| k))),
        };
        let page = match decode {
            Decode::Lines => Ok(Page { lines: vec![body], ..Page::default() }),
            Decode::AbuseIpdb => responses::abuseipdb(&body, &filter),
            Decode::OtxPulses => responses::otx_page(&body, &filter),
        }
        .map_err(|e| DownloadError::plain(redact(format!("{page_url}: {e}"))))?;
        filtered += page.filtered;
        // Documents are joined by a newline; a cut-off last line stays visible as one.
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        for line in page.lines {
            text.push_str(&line);
            if decode != Decode::Lines {
                text.push('\n');
            }
        }
        if let Some(next) = page.next {
            queue.push(next);
        }
    }
    let mut notes = Vec::new();
    if pages > 1 {
        notes.push(format!("{pages} pages read"));
    }
    if filtered > 0 {
        notes.push(format!("{filtered} entries below min-confidence, older than max-age or expired were left out"));
    }
    if !conditional {
        validators = Validators::default();
    }
    Ok(Download { fetched: Fetched::Body { text, validators }, notes })
}
