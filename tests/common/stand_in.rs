//! Loopback stand-ins for threat-intelligence providers: a tiny HTTP/1.1
//! server whose answers a test scripts, recording every request (path and
//! headers) so a test can check which host saw which key.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

/// One request as the server saw it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Path with its query.
    pub target: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The value of query parameter `k`.
    pub fn query(&self, k: &str) -> Option<&str> {
        let q = self.target.split_once('?')?.1;
        q.split('&').find_map(|kv| kv.strip_prefix(k)?.strip_prefix('='))
    }
}

/// What to answer.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(status: u16, body: impl Into<String>) -> Reply {
        Reply { status, headers: vec![("content-type".into(), "application/json".into())], body: body.into() }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply { status, headers: vec![("content-type".into(), "text/plain".into())], body: body.into() }
    }

    pub fn with(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

type Handler = Box<dyn Fn(&Seen, &str) -> Reply + Send>;

/// A stand-in on 127.0.0.1 (of the calling thread's network namespace).
pub struct StandIn {
    /// `http://127.0.0.1:PORT`
    pub base: String,
    handler: Arc<Mutex<Handler>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl StandIn {
    /// Starts serving; `handler(request, base)` answers each request.
    pub fn start(handler: impl Fn(&Seen, &str) -> Reply + Send + 'static) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let handler: Arc<Mutex<Handler>> = Arc::new(Mutex::new(Box::new(handler)));
        let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let (h, log, b) = (handler.clone(), seen.clone(), base.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                    continue;
                }
                let target = request_line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let mut headers = Vec::new();
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some((n, v)) = line.split_once(':') {
                        headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
                    }
                }
                let req = Seen { target, headers };
                log.lock().unwrap().push(req.clone());
                let reply = (h.lock().unwrap())(&req, &b);
                let mut head = format!("HTTP/1.1 {} X\r\n", reply.status);
                for (n, v) in &reply.headers {
                    head.push_str(&format!("{n}: {v}\r\n"));
                }
                head.push_str(&format!("content-length: {}\r\nconnection: close\r\n\r\n", reply.body.len()));
                let _ = stream.write_all(head.as_bytes());
                let _ = stream.write_all(reply.body.as_bytes());
            }
        });
        StandIn { base, handler, seen }
    }

    /// Changes how the stand-in answers from now on.
    pub fn answer(&self, handler: impl Fn(&Seen, &str) -> Reply + Send + 'static) {
        *self.handler.lock().unwrap() = Box::new(handler);
    }

    pub fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    pub fn forget(&self) {
        self.seen.lock().unwrap().clear();
    }
}

/// A stand-in for AbuseIPDB APIv2 `GET /api/v2/blacklist`: needs `Key`
/// (401 with AbuseIPDB's error body otherwise), honours `confidenceMinimum`.
/// `entries` are (ipAddress, abuseConfidenceScore, lastReportedAt).
pub fn abuseipdb(key: &'static str, entries: Vec<(&'static str, u8, &'static str)>) -> impl Fn(&Seen, &str) -> Reply {
    move |req, _| {
        if !req.target.starts_with("/api/v2/blacklist") {
            return Reply::json(404, r#"{"errors":[{"detail":"Not found.","status":404}]}"#);
        }
        if req.header("key") != Some(key) {
            return Reply::json(
                401,
                r#"{"errors":[{"detail":"Authentication failed. Your API key is either missing, incorrect, or revoked. Note: The APIv2 key differs from the APIv1 key.","status":401}]}"#,
            );
        }
        let min: u8 = req.query("confidenceMinimum").and_then(|c| c.parse().ok()).unwrap_or(100);
        let data: Vec<String> = entries
            .iter()
            .filter(|(_, score, _)| *score >= min)
            .map(|(ip, score, at)| {
                format!(
                    r#"{{"ipAddress":"{ip}","countryCode":"NL","abuseConfidenceScore":{score},"lastReportedAt":"{at}"}}"#
                )
            })
            .collect();
        Reply::json(
            200,
            format!(r#"{{"meta":{{"generatedAt":"2026-11-23T14:00:00+00:00"}},"data":[{}]}}"#, data.join(",")),
        )
    }
}

/// One OTX pulse JSON object with the given IP indicators.
pub fn otx_pulse(id: &str, modified: &str, ips: &[&str]) -> String {
    let indicators: Vec<String> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| {
            let kind = if ip.contains('/') {
                "CIDR"
            } else if ip.contains(':') {
                "IPv6"
            } else {
                "IPv4"
            };
            format!(
                r#"{{"id":{},"indicator":"{ip}","type":"{kind}","created":"{modified}","content":"","title":"","description":"","expiration":null,"is_active":1,"role":null}}"#,
                3_000_000 + i
            )
        })
        .collect();
    format!(
        r#"{{"id":"{id}","name":"pulse {id}","description":"","author_name":"AlienVault","modified":"{modified}","created":"{modified}","revision":1,"tlp":"white","public":1,"adversary":"","tags":["scanner"],"references":[],"indicators":[{}]}}"#,
        indicators.join(",")
    )
}

/// A stand-in for OTX `GET /api/v1/pulses/subscribed`: needs
/// `X-OTX-API-KEY` (403 otherwise) and serves `pages` (each a list of pulse
/// objects), linked by absolute `next` URLs as OTX gives them.
pub fn otx(key: &'static str, pages: Vec<Vec<String>>) -> impl Fn(&Seen, &str) -> Reply {
    move |req, base| {
        if !req.target.starts_with("/api/v1/pulses/subscribed") {
            return Reply::json(404, r#"{"detail":"Not found."}"#);
        }
        if req.header("x-otx-api-key") != Some(key) {
            return Reply::json(403, r#"{"detail":"Authentication credentials were not provided."}"#);
        }
        let page: usize = req.query("page").and_then(|p| p.parse().ok()).unwrap_or(1);
        let Some(results) = pages.get(page - 1) else {
            return Reply::json(404, r#"{"detail":"Invalid page."}"#);
        };
        let next = if page < pages.len() {
            format!(r#""{base}/api/v1/pulses/subscribed?limit=50&page={}""#, page + 1)
        } else {
            "null".to_string()
        };
        let previous = if page > 1 {
            format!(r#""{base}/api/v1/pulses/subscribed?limit=50&page={}""#, page - 1)
        } else {
            "null".into()
        };
        let count: usize = pages.iter().map(Vec::len).sum();
        Reply::json(
            200,
            format!(r#"{{"results":[{}],"count":{count},"next":{next},"previous":{previous}}}"#, results.join(",")),
        )
    }
}
