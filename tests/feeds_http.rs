//! Feed updates over HTTP from a small server on 127.0.0.1: conditional GET
//! with ETag (304), a failing server, a shrinking feed, an HTML error page.
//! In every bad case the last good copy stays cached.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use phantomc::feeds::cache::Cache;
use phantomc::feeds::update::{refresh, Outcome};
use phantomc::feeds::{FeedConfig, Format};

#[derive(Clone)]
struct Route {
    status: u16,
    body: String,
    etag: Option<&'static str>,
}

/// Serves `routes` until the test ends; records each request's headers.
struct FeedServer {
    base: String,
    routes: Arc<Mutex<HashMap<String, Route>>>,
    requests: Arc<Mutex<Vec<String>>>,
}

impl FeedServer {
    fn start() -> FeedServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let routes: Arc<Mutex<HashMap<String, Route>>> = Arc::default();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let (r, log) = (routes.clone(), requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    head.push_str(&line);
                }
                let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
                log.lock().unwrap().push(head.clone());
                let route = r.lock().unwrap().get(&path).cloned();
                let reply = match route {
                    None => "HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n".to_string(),
                    Some(Route { etag: Some(tag), .. })
                        if head
                            .to_ascii_lowercase()
                            .contains(&format!("if-none-match: {}", tag.to_ascii_lowercase())) =>
                    {
                        format!("HTTP/1.1 304 Not Modified\r\netag: {tag}\r\nconnection: close\r\n\r\n")
                    }
                    Some(route) => {
                        let etag = route.etag.map_or_else(String::new, |t| format!("etag: {t}\r\n"));
                        format!(
                            "HTTP/1.1 {} X\r\n{etag}last-modified: Mon, 23 Nov 2026 14:02:11 GMT\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                            route.status,
                            route.body.len(),
                            route.body
                        )
                    }
                };
                let _ = stream.write_all(reply.as_bytes());
            }
        });
        FeedServer { base, routes, requests }
    }

    fn serve(&self, path: &str, status: u16, body: &str, etag: Option<&'static str>) {
        self.routes.lock().unwrap().insert(path.to_string(), Route { status, body: body.to_string(), etag });
    }

    fn last_request(&self) -> String {
        self.requests.lock().unwrap().last().cloned().unwrap_or_default()
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
    let closed = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let gone = FeedConfig { source: format!("http://{closed}/drop.txt"), ..cfg.clone() };
    let r = refresh(&gone, &cache, 3000).unwrap();
    assert!(matches!(&r.outcome, Outcome::Kept { reason } if reason.starts_with("download failed")), "{:?}", r.outcome);
    assert_eq!(cache.nets("drop").unwrap().unwrap().len(), 5);
}
