//! A feed made of several URLs (Spamhaus DROP's IPv4 and IPv6 lists): each
//! URL is asked on its own, conditionally with its own ETag/Last-Modified
//! and not before its own `Retry-After`. A URL that answers 304, or fails
//! while it has a last good copy, contributes that copy, so the feed is the
//! union of the new and the cached parts; each URL keeps its latest error.

use super::cache::{Cache, Meta, Part};
use super::fetch::{Fetched, Validators};
use super::provider::{self, Download, DownloadError};
use super::FeedConfig;

/// What one attempt over every URL of a feed leaves to record.
#[derive(Debug, Default)]
pub struct Records {
    /// Each URL's record, if the joined copy becomes the cached one...
    pub if_accepted: Vec<Part>,
    /// ... and if it is refused (a new text's validators are not kept).
    pub if_refused: Vec<Part>,
    /// The new texts by URL index, cached with an accepted copy.
    pub texts: Vec<(usize, String)>,
    /// Errors of URLs whose last good copy stood in (failed now, or still
    /// paused after an earlier failure).
    pub errors: Vec<String>,
    /// A URL failed in this attempt (one still paused stands in quietly).
    pub failed: bool,
}

impl Records {
    /// The joined copy became the cached one: its new texts are cached (before
    /// the metadata naming their validators), and the URLs that failed are
    /// named in the feed's message and last error.
    pub fn accepted(self, cache: &Cache, feed: &str, meta: &mut Meta, now: u64) -> Result<(), String> {
        for (index, text) in &self.texts {
            cache.store_part(feed, *index, text)?;
        }
        meta.parts = self.if_accepted;
        if !self.errors.is_empty() {
            let errors = self.errors.join("; ");
            meta.message = Some(format!("partly updated, the last good copy kept for {errors}"));
            if self.failed {
                (meta.last_error, meta.last_error_at) = (Some(errors), Some(now));
            }
        }
        // A URL that failed is a failed refresh for /metrics, whatever the others did.
        meta.failures_total += u64::from(self.failed);
        Ok(())
    }
}

/// Every URL of a feed, `source` first.
pub fn urls(cfg: &FeedConfig) -> Vec<&str> {
    std::iter::once(cfg.source.as_str()).chain(cfg.more_sources.iter().map(String::as_str)).collect()
}

/// An error about one URL, naming it once.
fn about(url: &str, message: &str) -> String {
    let bare = url.split('?').next().unwrap_or(url);
    if message.starts_with(bare) {
        message.to_string()
    } else {
        format!("{bare}: {message}")
    }
}

/// Downloads every URL of `cfg`; `prev` are the records of the cached copy.
/// `pause` says until when a URL that failed (after `failures` failures in a
/// row) must not be asked again. The download is, as for a one-URL feed, the
/// joined text when a URL had something new; an error when a URL without a
/// cached copy failed (or is paused), or when none had something new and
/// one failed; else 304.
pub fn download(
    cfg: &FeedConfig,
    cache: &Cache,
    prev: &[Part],
    now: u64,
    pause: &dyn Fn(&DownloadError, u32) -> Option<u64>,
) -> Result<(Result<Download, DownloadError>, Records), String> {
    let mut a = Records::default();
    let (mut text, mut notes, mut fresh, mut fatal) = (String::new(), Vec::new(), false, None);
    for (index, url) in urls(cfg).into_iter().enumerate() {
        let old = prev.iter().find(|p| p.url == url);
        let cached = match old {
            Some(_) => cache.part(&cfg.name, index)?,
            None => None,
        };
        let mut record = old.cloned().unwrap_or_else(|| Part { url: url.to_string(), ..Part::default() });
        // Without its copy a URL is asked unconditionally: a 304 would leave nothing.
        let known = if cached.is_some() { record.validators() } else { Validators::default() };
        let got = match record.retry_at.filter(|&t| now < t) {
            Some(until) => {
                let why = record.error.clone().unwrap_or_else(|| "the provider asked for a pause".into());
                let message = format!("{}; not asked again for {}s", about(url, &why), until - now);
                a.if_accepted.push(record.clone());
                a.if_refused.push(record);
                stand_in(&cached, DownloadError { message, retry_after: None, busy: false }, &mut a.errors, &mut fatal);
                cached
            }
            None => match provider::download(cfg, url, &known, now) {
                Ok(Download { fetched: Fetched::NotModified, .. }) if cached.is_none() => {
                    let message = about(url, "answered 304 Not Modified to a request that was not conditional");
                    let e = DownloadError { message, retry_after: None, busy: false };
                    a.if_accepted.push(record.clone());
                    a.if_refused.push(record);
                    stand_in(&cached, e, &mut a.errors, &mut fatal);
                    cached
                }
                Ok(Download { fetched: Fetched::NotModified, .. }) => {
                    record.failures = 0;
                    (record.retry_at, record.error) = (None, None);
                    a.if_accepted.push(record.clone());
                    a.if_refused.push(record);
                    cached
                }
                Ok(Download { fetched: Fetched::Body { text: body, validators }, notes: more }) => {
                    fresh = true;
                    notes.extend(more);
                    let mut new = record.clone();
                    (new.etag, new.last_modified, new.fetched_at) = (validators.etag, validators.last_modified, now);
                    new.failures = 0;
                    (new.retry_at, new.error) = (None, None);
                    a.if_accepted.push(new);
                    a.if_refused.push(record);
                    a.texts.push((index, body.clone()));
                    Some(body)
                }
                Err(e) => {
                    a.failed = true;
                    record.failures += 1;
                    record.retry_at = pause(&e, record.failures);
                    let message = about(url, &e.message);
                    (record.error, record.error_at) = (Some(message.clone()), Some(now));
                    a.if_accepted.push(record.clone());
                    a.if_refused.push(record);
                    stand_in(&cached, DownloadError { message, ..e }, &mut a.errors, &mut fatal);
                    cached
                }
            },
        };
        // Documents are joined by a newline; a cut-off last line stays visible as one.
        if let Some(part) = got {
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str(&part);
        }
    }
    let result = match fatal {
        Some(e) => Err(e),
        None if fresh => Ok(Download { fetched: Fetched::Body { text, validators: Validators::default() }, notes }),
        None if a.failed => Err(DownloadError { message: a.errors.join("; "), retry_after: None, busy: false }),
        None => Ok(Download { fetched: Fetched::NotModified, notes: Vec::new() }),
    };
    Ok((result, a))
}

/// A URL that gave nothing new: its cached copy stands in (its error noted
/// in `errors`), or without one the feed cannot be complete (`fatal`).
fn stand_in(cached: &Option<String>, e: DownloadError, errors: &mut Vec<String>, fatal: &mut Option<DownloadError>) {
    match cached {
        Some(_) => errors.push(e.message),
        None => {
            fatal.get_or_insert(e);
        }
    }
}
