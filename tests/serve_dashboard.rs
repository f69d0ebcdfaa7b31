//! The dashboard in headless Chromium, against `phantomc serve` running in a
//! server namespace with the webserver policy applied and real traffic
//! counted. Chromium runs inside the same namespace.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const PORT: u16 = 9180;
const DIFF: &str = "--- webserver.pf\n+++ proposed\n@@ -20 +20,2 @@\n+pass   in proto tcp to port 8443 state new\n";

/// Headless Chromium inside `ns`, with its own throwaway profile; `extra`
/// says what to produce (`--dump-dom` or `--screenshot=FILE`).
fn chromium(ns: &Netns, profile: &Path, path: &str, extra: &[&str]) -> std::process::Output {
    let found = Command::new("sh").args(["-c", "command -v chromium"]).output().is_ok_and(|o| o.status.success());
    assert!(found, "the dashboard test needs Debian's chromium (apt-get install chromium)");
    let profile = format!("--user-data-dir={}", profile.display());
    let url = format!("http://127.0.0.1:{PORT}{path}");
    let mut args = vec![
        "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        &profile,
        // Virtual time lets the page's fetches finish before the dump.
        "--virtual-time-budget=5000",
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    let out = ns.exec(&args);
    assert!(out.status.success(), "chromium failed: {}", stderr(&out));
    out
}

#[test]
fn dashboard_renders_live_counts_blocks_and_proposals() {
    let lab = web_lab();
    let _servers = Servers::start(&lab.srv, &[80, 443], &[]);
    apply(&lab.srv, WEB);
    for port in [80, 443, 80, 443, 80] {
        assert_eq!(tcp_connect(&lab.publ, "198.51.100.1", port), Tcp::Connected);
    }
    let out = lab.srv.phantomc(&["block", "203.0.113.9", "--timeout", "1h"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dir = tempfile::tempdir().expect("tempdir");
    let proposals = dir.path().join("proposals.diff");
    std::fs::write(&proposals, DIFF).expect("proposals");
    let svc = Service::start(
        &lab.srv,
        PORT,
        &[WEB, "--proposals", proposals.to_str().expect("path"), "--state-file", "/nonexistent/health.json"],
    );

    let rules = svc.get_json("/api/v1/rules");
    let web =
        rules["rules"].as_array().expect("rules").iter().find(|r| r["id"] == "webserver.pf:20").expect("web rule");
    let packets = web["packets"].as_u64().expect("counted");
    assert_eq!(packets, 5, "one SYN per connection: {web}");

    let dom = common::stdout(&chromium(&lab.srv, &dir.path().join("profile-dom"), "/", &["--dump-dom"]));
    assert!(dom.contains(r#"data-loaded="yes""#), "the page loaded its data: {dom}");
    assert!(dom.contains(r#"class="badge in-sync""#), "health badge: {dom}");
    let bar =
        format!(r#"<g class="bar" data-rule="webserver.pf:20" data-packets="{packets}" data-bytes="{}""#, web["bytes"]);
    assert!(dom.contains(&bar), "chart bar with the live count {bar}: {dom}");
    assert_eq!(dom.matches(r#"<g class="bar""#).count(), 12, "every line of the webserver policy is counted");
    assert!(dom.contains(&format!("{packets} pkts")), "{dom}");
    assert!(dom.contains(r#"data-address="203.0.113.9/32""#), "blocked address: {dom}");
    assert!(dom.contains("+pass   in proto tcp to port 8443 state new"), "proposal: {dom}");
    assert!(dom.contains(r#"data-rule="webserver.pf:12" data-packets=""#), "the default policy's bar: {dom}");

    let shot = dir.path().join("dashboard.png");
    let arg = format!("--screenshot={}", shot.display());
    chromium(&lab.srv, &dir.path().join("profile-shot"), "/", &[&arg, "--window-size=1280,900"]);
    let img = decode(&shot);
    assert_eq!((img.width, img.height), (1280, 900));
    // Not blank: many colours, and the chart's bar colour (#2f6fdb) drawn
    // over a good part of its track.
    let mut colours: Vec<[u8; 3]> = img.pixels.clone();
    colours.sort_unstable();
    colours.dedup();
    assert!(colours.len() > 50, "only {} colours: a blank page?", colours.len());
    let lum: Vec<f64> = img
        .pixels
        .iter()
        .map(|p| 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]))
        .collect();
    let mean = lum.iter().sum::<f64>() / lum.len() as f64;
    let variance = lum.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / lum.len() as f64;
    assert!(variance > 100.0, "luminance variance {variance:.1}: a blank page?");
    let bar_pixels = img
        .pixels
        .iter()
        .filter(|p| p[0].abs_diff(0x2f) < 8 && p[1].abs_diff(0x6f) < 8 && p[2].abs_diff(0xdb) < 8)
        .count();
    assert!(bar_pixels > 5_000, "the hit bar is drawn ({bar_pixels} bar-coloured pixels)");
    assert_eq!(img.pixel(10, 10), [0x1d, 0x23, 0x30], "dark header");

    // The API docs page renders every operation of the OpenAPI document.
    let docs = common::stdout(&chromium(&lab.srv, &dir.path().join("profile-docs"), "/api/docs", &["--dump-dom"]));
    for op in [
        "get/api/v1/status",
        "get/api/v1/rules",
        "get/api/v1/threats",
        "get/api/v1/proposals",
        "post/api/v1/block",
        "post/api/v1/unblock",
        "get/metrics",
    ] {
        assert!(docs.contains(&format!(r#"id="{op}""#)), "{op} on the docs page: {docs}");
    }
}

struct Image {
    width: u32,
    height: u32,
    pixels: Vec<[u8; 3]>,
}

impl Image {
    fn pixel(&self, x: u32, y: u32) -> [u8; 3] {
        self.pixels[(y * self.width + x) as usize]
    }
}

/// Decodes a PNG screenshot into RGB pixels.
fn decode(path: &Path) -> Image {
    let file = std::io::BufReader::new(std::fs::File::open(path).expect("screenshot written"));
    let mut reader = png::Decoder::new(file).read_info().expect("a valid PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("buffer size")];
    let info = reader.next_frame(&mut buf).expect("PNG frame");
    let step = match info.color_type {
        png::ColorType::Rgb => 3,
        png::ColorType::Rgba => 4,
        other => panic!("unexpected PNG colour type {other:?}"),
    };
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let pixels = buf[..info.buffer_size()].chunks_exact(step).map(|p| [p[0], p[1], p[2]]).collect();
    Image { width: info.width, height: info.height, pixels }
}
