//! Feed updates over HTTP from a small server on 127.0.0.1: conditional GET
//! with ETag (304), a failing server, a shrinking feed, an HTML error page.
//! In every bad case the last good copy stays cached.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use common::stand_in::{Reply, StandIn};
use phantomc::feeds::cache::Cache;
use phantomc::feeds::update::{refresh, Outcome};
use phantomc::feeds::{FeedConfig, Format};

#[derive(Clone)]
struct Route {
    status: u16,
    body: String,
    etag: Option<&'static str>,
}

/// A feed server on 127.0.0.1 serving `routes`, conditional on the ETag.
struct FeedServer {
    base: String,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    stand_in: StandIn,
}

impl FeedServer {
    fn start() -> FeedServer {
        let routes: Arc<Mutex<HashMap<String, Route>>> = Arc::default();
        let r = routes.clone();
        let stand_in = StandIn::start(move |req, _| {
            let Some(route) = r.lock().unwrap().get(&req.target).cloned() else {
                return Reply::text(404, "");
            };
            match route.etag {
                Some(tag) if req.header("if-none-match") == Some(tag) => Reply::text(304, "").with("etag", tag),
                etag => {
                    let reply =
                        Reply::text(route.status, route.body).with("last-modified", "Mon, 23 Nov 2026 14:02:11 GMT");
                    match etag {
                        Some(tag) => reply.with("etag", tag),
                        None => reply,
                    }
                }
            }
        });
        FeedServer { base: stand_in.base.clone(), routes, stand_in }
    }

    fn serve(&self, path: &str, status: u16, body: &str, etag: Option<&'static str>) {
        self.routes.lock().unwrap().insert(path.to_string(), Route { status, body: body.to_string(), etag });
    }

    /// The headers of the latest request, one `name: value` a line.
    fn last_request(&self) -> String {
        let seen = self.stand_in.requests();
        let Some(last) = seen.last() else { return String::new() };
        last.headers.iter().map(|(n, v)| format!("{n}: {v}\n")).collect()
    }
}

fn feed(source: String, max_shrink_percent: u64) -> FeedConfig {
    FeedConfig { max_entries: 1000, max_shrink_percent, ..FeedConfig::new("drop", &source, Format::Spamhaus) }
}

/// `n` Spamhaus DROP lines of distinct, non-adjacent /24s.
fn drop_list(n: u32) -> String {
    let mut s = String::from("; Spamhaus DROP List 2026/11/23\n; Last-Modified: Mon, 23 Nov 2026 14:02:11 GMT\n");
    for i in 0..n {
        s.push_str(&format!("{}.{}.0.0/24 ; SBL{}\n", 20 + i, 2 * i, 500_000 + i));
    }
    s
}

fn cache() -> (tempfile::TempDir, Cache) {
    let dir = tempfile::tempdir().expect("tempdir");
    let cache = Cache::new(dir.path().join("feeds"));
    (dir, cache)
}

/// A server, and a cache holding a good copy of `entries` entries from it (fetched at time 1000).
fn with_good_copy(entries: u32) -> (FeedServer, tempfile::TempDir, Cache, FeedConfig) {
    let server = FeedServer::start();
    let (dir, cache) = cache();
    let cfg = feed(format!("{}/drop.txt", server.base), 50);
    server.serve("/drop.txt", 200, &drop_list(entries), None);
    assert_eq!(refresh(&cfg, &cache, 1000).unwrap().outcome, Outcome::Updated);
    (server, dir, cache, cfg)
}

#[test]
fn etag_makes_the_second_fetch_a_304() {
    let server = FeedServer::start();
    server.serve("/drop.txt", 200, &drop_list(5), Some("\"v1\""));
    let (_dir, cache) = cache();
    let cfg = feed(format!("{}/drop.txt", server.base), 50);

    let first = refresh(&cfg, &cache, 1000).unwrap();
    assert_eq!(first.outcome, Outcome::Updated);
    assert_eq!((first.meta.v4, first.meta.etag.as_deref()), (5, Some("\"v1\"")));
    assert_eq!(first.meta.last_modified.as_deref(), Some("Mon, 23 Nov 2026 14:02:11 GMT"));
    assert!(!server.last_request().to_ascii_lowercase().contains("if-none-match"));

    let second = refresh(&cfg, &cache, 2000).unwrap();
    assert_eq!(second.outcome, Outcome::NotModified);
    let req = server.last_request().to_ascii_lowercase();
    assert!(req.contains("if-none-match: \"v1\""), "{req}");
    assert!(req.contains("if-modified-since: mon, 23 nov 2026 14:02:11 gmt"), "{req}");
    assert_eq!(second.meta.fetched_at, 1000, "the copy is still the one fetched first");
    assert_eq!(cache.nets("drop").unwrap().unwrap().len(), 5);

    server.serve("/drop.txt", 200, &drop_list(7), Some("\"v2\""));
    let third = refresh(&cfg, &cache, 3000).unwrap();
    assert_eq!((third.outcome, third.meta.v4), (Outcome::Updated, 7));
}

#[test]
fn a_failing_server_keeps_the_last_good_copy() {
    let server = FeedServer::start();
    let (_dir, cache) = cache();
    let cfg = feed(format!("{}/drop.txt", server.base), 50);

    // Never fetched: nothing to keep, and nothing is cached.
    server.serve("/drop.txt", 500, "Internal Server Error", None);
    let r = refresh(&cfg, &cache, 1000).unwrap();
    assert!(
        matches!(&r.outcome, Outcome::Kept { reason } if reason.ends_with("drop.txt: HTTP 500: Internal Server Error")),
        "{:?}",
        r.outcome
    );
    assert_eq!(cache.nets("drop").unwrap(), None);

    server.serve("/drop.txt", 200, &drop_list(4), None);
    assert_eq!(refresh(&cfg, &cache, 2000).unwrap().outcome, Outcome::Updated);
    let good = cache.nets("drop").unwrap().unwrap();

    server.serve("/drop.txt", 500, "Internal Server Error", None);
    let r = refresh(&cfg, &cache, 3000).unwrap();
    assert!(matches!(r.outcome, Outcome::Kept { .. }));
    assert_eq!(cache.nets("drop").unwrap().unwrap(), good);
    let meta = cache.meta("drop").unwrap().unwrap();
    assert_eq!((meta.status.as_str(), meta.fetched_at, meta.checked_at, meta.v4), ("kept-last-good", 2000, 3000, 4));
    assert!(meta.message.unwrap().contains("HTTP 500"));
}

#[test]
fn a_feed_that_shrinks_too_much_is_refused() {
    let (server, _dir, cache, cfg) = with_good_copy(10);

    server.serve("/drop.txt", 200, &drop_list(3), None);
    let r = refresh(&cfg, &cache, 2000).unwrap();
    assert_eq!(
        r.outcome,
        Outcome::Kept { reason: "shrank from 10 to 3 entries (-70%), more than max-shrink 50%".into() }
    );
    assert_eq!(cache.nets("drop").unwrap().unwrap().len(), 10, "nothing is lost");

    // A smaller shrink is a normal update.
    server.serve("/drop.txt", 200, &drop_list(6), None);
    assert_eq!(refresh(&cfg, &cache, 3000).unwrap().outcome, Outcome::Updated);
    assert_eq!(cache.nets("drop").unwrap().unwrap().len(), 6);
}

#[test]
fn an_html_page_or_a_dead_server_never_replaces_a_feed() {
    let (server, _dir, cache, cfg) = with_good_copy(5);

    let page = std::fs::read_to_string("testdata/feeds/error_page.html").unwrap();
    server.serve("/drop.txt", 200, &page, None);
    let r = refresh(&cfg, &cache, 2000).unwrap();
    assert!(matches!(&r.outcome, Outcome::Kept { reason } if reason.contains("HTML page")), "{:?}", r.outcome);

    // Nobody listens on this port any more.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let gone = FeedConfig { source: format!("http://{closed}/drop.txt"), ..cfg.clone() };
    let r = refresh(&gone, &cache, 3000).unwrap();
    assert!(matches!(&r.outcome, Outcome::Kept { reason } if reason.starts_with("download failed")), "{:?}", r.outcome);
    assert_eq!(cache.nets("drop").unwrap().unwrap().len(), 5);
}

#[test]
fn a_poisoned_or_cut_download_never_becomes_the_last_good_copy() {
    let (server, _dir, cache, cfg) = with_good_copy(5);

    // Two halves of an address family: no /0 on any line, everything after aggregation.
    for (poison, family) in [("0.0.0.0/1 ; SBL1\n128.0.0.0/1 ; SBL2\n", "IPv4"), ("::/1\n8000::/1\n", "IPv6")] {
        server.serve("/drop.txt", 200, poison, Some("\"poisoned\""));
        let r = refresh(&cfg, &cache, 2000).unwrap();
        assert!(
            matches!(&r.outcome, Outcome::Kept { reason } if reason.starts_with("too broad: covers") && reason.contains(family)),
            "{:?}",
            r.outcome
        );
        assert_eq!(cache.nets("drop").unwrap().unwrap().len(), 5);
    }
    // `198.51.0.0/16` cut mid-line to `198.51.0.0/1`.
    let cut = format!("{}198.51.0.0/1", drop_list(5));
    server.serve("/drop.txt", 200, &cut, Some("\"cut\""));
    let r = refresh(&cfg, &cache, 3000).unwrap();
    assert!(
        matches!(&r.outcome, Outcome::Kept { reason } if reason.starts_with("truncated: the last line (8: \"198.51.0.0/1\")")),
        "{:?}",
        r.outcome
    );
    // The refused copies' ETags were not kept: the next request is unconditional.
    server.serve("/drop.txt", 200, &drop_list(5), None);
    assert_eq!(refresh(&cfg, &cache, 4000).unwrap().outcome, Outcome::Updated);
    assert!(!server.last_request().to_ascii_lowercase().contains("if-none-match"), "{}", server.last_request());
}
