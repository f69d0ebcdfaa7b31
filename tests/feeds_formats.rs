//! Feed formats on real-looking samples (testdata/feeds), and bad feeds:
//! junk lines, empty, huge, truncated, the wrong type of document.

use ipnet::Ipv4Net;
use phantomc::feeds::normalize::{parse, Parsed};
use phantomc::feeds::update::validate;
use phantomc::feeds::{FeedConfig, Format};

fn sample(name: &str, format: Format, column: usize) -> Parsed {
    let text = std::fs::read_to_string(format!("testdata/feeds/{name}")).expect("sample");
    parse(&text, format, column).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn nets(p: &Parsed) -> Vec<String> {
    p.nets().map(|n| n.to_string()).collect()
}

fn cfg(max_entries: usize) -> FeedConfig {
    FeedConfig { max_entries, ..FeedConfig::new("t", "t", Format::Plain) }
}

#[test]
fn spamhaus_drop_with_header_and_sbl_notes() {
    let p = sample("spamhaus_drop.txt", Format::Spamhaus, 1);
    assert_eq!(p.entries, 12);
    assert_eq!(p.junk.count, 0, "{:?}", p.junk);
    // The two adjacent /24s at the end merge into one /23.
    assert_eq!(p.v4.len(), 11);
    assert!(nets(&p).contains(&"45.135.232.0/23".to_string()));
    assert_eq!(nets(&p)[0], "1.10.16.0/20");
    assert!(p.v6.is_empty());
}

#[test]
fn spamhaus_drop_json_lines_with_metadata_record() {
    let p = sample("spamhaus_drop_v4.json", Format::Spamhaus, 1);
    assert_eq!((p.entries, p.junk.count), (6, 0));
    assert_eq!(nets(&p), ["1.10.16.0/20", "1.19.0.0/16", "1.32.128.0/18", "2.56.192.0/22", "45.135.232.0/23"]);
}

#[test]
fn firehol_netset_with_comment_block() {
    let p = sample("firehol_level1.netset", Format::Netset, 1);
    assert_eq!((p.entries, p.junk.count), (15, 0));
    let n = nets(&p);
    assert!(n.contains(&"224.0.0.0/3".to_string()) && n.contains(&"198.18.0.0/15".to_string()));
    assert_eq!(p.v4.len(), 15, "no two of these are adjacent");
}

#[test]
fn csv_column_with_header_line() {
    let p = sample("abuse.csv", Format::Csv, 2);
    assert_eq!(p.header, Some(2), "the quoted header after the comment");
    assert_eq!(p.junk.count, 0);
    assert_eq!(nets(&p), ["198.51.100.200/32", "203.0.113.17/32", "203.0.113.18/31", "2001:db8:bad::15/128"]);
}

#[test]
fn csv_wrong_column_is_all_junk_and_refused() {
    let p = sample("abuse.csv", Format::Csv, 3);
    assert_eq!(p.total(), 0);
    assert!(validate(&p, 0, &cfg(100)).unwrap_err().starts_with("garbage"));
}

#[test]
fn otx_pulse_takes_ip_indicators_only() {
    let p = sample("otx_pulse.json", Format::Otx, 1);
    // hostname, URL and hash indicators are not addresses; 203.0.113.300 is junk.
    assert_eq!(nets(&p), ["198.51.100.0/25", "203.0.113.44/31", "2001:db8:66::7/128"]);
    assert_eq!(p.junk.count, 1);
    let (line, text) = &p.junk.examples[0];
    assert_eq!(text, "203.0.113.300");
    let json = std::fs::read_to_string("testdata/feeds/otx_pulse.json").unwrap();
    assert!(json.lines().nth(line - 1).unwrap().contains("203.0.113.300"), "line {line} is where it is");
}

#[test]
fn junk_lines_are_dropped_and_reported_with_line_numbers() {
    let p = sample("junk_lines.txt", Format::Plain, 1);
    assert_eq!(nets(&p), ["192.0.2.10/31", "198.51.100.0/24", "2001:db8::/32"]);
    assert_eq!(p.junk.count, 3);
    let w = p.junk.warning().unwrap();
    assert_eq!(w, r#"3 junk lines dropped (line 4: "192.0.2.300", line 5: "hello world", line 7: "10.0.0.0/33")"#);
    assert_eq!(validate(&p, 0, &cfg(100)), Ok(()), "a few junk lines do not refuse a feed");
}

#[test]
fn empty_feeds_are_refused() {
    for name in ["empty.txt", "comments_only.txt"] {
        let p = sample(name, Format::Plain, 1);
        assert_eq!(validate(&p, 0, &cfg(100)), Err("empty: the feed lists no addresses".into()), "{name}");
    }
}

#[test]
fn an_html_error_page_is_not_a_feed() {
    let text = std::fs::read_to_string("testdata/feeds/error_page.html").unwrap();
    let err = parse(&text, Format::Plain, 1).unwrap_err();
    assert!(err.to_string().contains("HTML page"), "{err}");
    // Whatever format is declared.
    assert!(parse(&text, Format::Otx, 1).is_err());
}

#[test]
fn truncated_downloads_are_refused() {
    let p = sample("truncated.txt", Format::Plain, 1);
    assert_eq!(validate(&p, 0, &cfg(100)), Err(r#"truncated: the last line (5: "198.51.10") is cut off"#.into()));
    let json = std::fs::read_to_string("testdata/feeds/otx_truncated.json").unwrap();
    let err = parse(&json, Format::Otx, 1).unwrap_err().to_string();
    assert_eq!(err, "bad OTX JSON at line 13, column 95: EOF while parsing a string");
}

#[test]
fn a_feed_over_max_entries_is_refused() {
    // 300,000 distinct non-adjacent hosts: aggregation cannot shrink them.
    let text: String =
        (0..300_000u32).map(|i| format!("{}\n", std::net::Ipv4Addr::from(0x0a00_0000 + 2 * i))).collect();
    let p = parse(&text, Format::Plain, 1).unwrap();
    assert_eq!(p.total(), 300_000);
    assert_eq!(
        validate(&p, 0, &cfg(250_000)),
        Err("too big: 300000 entries after aggregation, max-entries is 250000".into())
    );
    assert_eq!(validate(&p, 0, &cfg(300_000)), Ok(()));
}

#[test]
fn aggregation_matches_a_brute_force_cover() {
    // Random-ish overlapping networks: the aggregate covers exactly the same
    // addresses (checked on a /16 where every address can be counted).
    let mut text = String::new();
    let mut seed = 12345u32;
    let mut covered = vec![false; 1 << 16];
    for _ in 0..2000 {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
        let len = 20 + (seed >> 8) % 13;
        let addr = 0xc0a8_0000 | ((seed >> 12) & 0xffff);
        let net = Ipv4Net::new(std::net::Ipv4Addr::from(addr), len as u8).unwrap().trunc();
        let (lo, hi) = (u32::from(net.network()), 1u32 << (32 - len));
        for a in lo..lo + hi {
            covered[(a & 0xffff) as usize] = true;
        }
        text.push_str(&format!("{net}\n"));
    }
    let p = parse(&text, Format::Plain, 1).unwrap();
    let mut got = vec![false; 1 << 16];
    for n in &p.v4 {
        let lo = u32::from(n.network());
        for a in lo..lo + (1u32 << (32 - n.prefix_len())) {
            assert!(!got[(a & 0xffff) as usize], "{n} overlaps another entry");
            got[(a & 0xffff) as usize] = true;
        }
    }
    assert_eq!(got, covered);
}

fn phantomc(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_phantomc")).args(args).output().expect("run phantomc")
}

#[test]
fn feeds_parse_prints_the_aggregate_and_counts() {
    let out = phantomc(&["feeds", "parse", "testdata/feeds/abuse.csv", "--format", "csv", "--column", "2", "--print"]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "198.51.100.200/32\n203.0.113.17/32\n203.0.113.18/31\n2001:db8:bad::15/128\n"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("testdata/feeds/abuse.csv: 5 entries, 0 junk; aggregated to 3 IPv4 + 1 IPv6 networks in "),
        "{err}"
    );

    let out = phantomc(&["feeds", "parse", "testdata/feeds/error_page.html"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error_page.html: not a feed: looks like an HTML page"));
    let out = phantomc(&["feeds", "parse", "testdata/feeds/abuse.csv", "--format", "xml"]);
    assert_eq!(out.status.code(), Some(2), "unknown format is a usage error");
    // Only comments: nothing to block is an error, not a success.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "# no addresses today\n\n").unwrap();
    let out = phantomc(&["feeds", "parse", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "no entries: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty.txt: no addresses found (check --format)"));
}

#[test]
fn feeds_list_reads_the_cache_only() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().to_str().unwrap();
    let out = phantomc(&["feeds", "list", "--state-dir", state]);
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("no feeds cached in {state}/feeds\n"));
    let out = phantomc(&["feeds", "update", "a", "b", "c"]);
    assert_eq!(out.status.code(), Some(2), "three positionals is a usage error");
}
