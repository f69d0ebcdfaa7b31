//! Literal values of the policy text (numbers, addresses, dates, durations,
//! marks), checked and converted: shared by both parsers, so a literal means
//! the same whichever read it, and an invalid one gets the same diagnostic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::ast::Date;
use crate::diag::{Diag, Span};

/// A literal's value, or why it is refused.
pub type Checked<T> = Result<T, Box<Diag>>;

fn too_large(text: &str, span: Span) -> Box<Diag> {
    Box::new(Diag::error("bad-number", span, format!("`{text}` is too large"), "number out of range"))
}

pub fn number(text: &str, span: Span) -> Checked<u64> {
    text.parse::<u64>().map_err(|_| too_large(text, span))
}

/// One end of a port range.
pub fn port_bound(text: &str, span: Span) -> Checked<u32> {
    text.parse::<u32>().map_err(|_| too_large(text, span))
}

pub fn duration(text: &str, span: Span) -> Checked<u64> {
    // The grammar admits only a number and a unit: too large is the one way left to fail.
    super::duration::seconds(text).map_err(|_| {
        Box::new(Diag::error("bad-number", span, format!("duration `{text}` is too large"), "out of range"))
    })
}

pub fn date(text: &str, span: Span) -> Checked<Date> {
    let field = |range: std::ops::Range<usize>| text.get(range).and_then(|t| t.parse::<u16>().ok());
    let parsed = match (field(0..4), field(5..7), field(8..10)) {
        (Some(y), Some(m), Some(d)) => {
            u8::try_from(m).ok().zip(u8::try_from(d).ok()).and_then(|(m, d)| Date::new(y, m, d))
        }
        _ => None,
    };
    parsed.ok_or_else(|| {
        Box::new(
            Diag::error("bad-date", span, format!("`{text}` is not a date"), "no such day")
                .with_help("dates are YEAR-MONTH-DAY and must exist, e.g. `expires 2026-12-31`"),
        )
    })
}

/// A packet mark as written (`0x10` or `16`); too long for u64 is u64::MAX,
/// certainly too large for a mark (lowering says so).
pub fn mark(text: &str) -> u64 {
    let v = text.to_ascii_lowercase();
    let n = match v.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => v.parse(),
    };
    n.unwrap_or(u64::MAX)
}

/// A hook chain's priority; out of i64 range is far outside the allowed
/// priorities, reported by lowering.
pub fn priority(text: &str) -> i64 {
    text.parse::<i64>().unwrap_or(i64::MAX)
}

/// Bytes per `quota` unit.
pub fn quota_scale(unit: &str) -> u64 {
    match unit {
        "kbytes" => 1 << 10,
        "mbytes" => 1 << 20,
        "gbytes" => 1 << 30,
        _ => 1,
    }
}

/// An address or network (`10.0.0.0/8`, `2001:db8::1`), which must start its network.
pub fn net(text: &str, span: Span) -> Checked<ipnet::IpNet> {
    let (addr_text, len_text) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let addr: IpAddr = if addr_text.contains(':') {
        match addr_text.parse::<Ipv6Addr>() {
            Ok(a) => IpAddr::V6(a),
            Err(_) => {
                let help = if addr_text.chars().all(|c| c.is_ascii_digit() || c == ':') {
                    "port ranges are written with a dash: `1024-2048`"
                } else {
                    "IPv6 addresses look like `2001:db8::1` or `fd00::/8`"
                };
                return Err(Box::new(
                    Diag::error(
                        "bad-address",
                        span,
                        format!("`{addr_text}` is not a valid IPv6 address"),
                        "invalid IPv6 address",
                    )
                    .with_help(help),
                ));
            }
        }
    } else {
        match addr_text.parse::<Ipv4Addr>() {
            Ok(a) => IpAddr::V4(a),
            Err(_) => {
                let bad = addr_text.split('.').find(|o| o.parse::<u8>().is_err()).unwrap_or(addr_text);
                return Err(Box::new(
                    Diag::error(
                        "bad-address",
                        span,
                        format!("`{addr_text}` is not a valid IPv4 address"),
                        format!("`{bad}` is not an octet (0-255)"),
                    )
                    .with_help("each of the four parts of an IPv4 address is a number from 0 to 255"),
                ));
            }
        }
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let bad_prefix = |l: &str| {
        Box::new(
            Diag::error(
                "bad-prefix",
                span,
                format!("prefix length `/{l}` is out of range"),
                format!("must be 0 to {max}"),
            )
            .with_help(format!("an {} prefix has at most {max} bits", if max == 32 { "IPv4" } else { "IPv6" })),
        )
    };
    let len = match len_text {
        None => max,
        Some(l) => match l.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => return Err(bad_prefix(l)),
        },
    };
    let net = ipnet::IpNet::new(addr, len).map_err(|_| bad_prefix(len_text.unwrap_or_default()))?;
    if net.network() != addr {
        return Err(Box::new(
            Diag::error(
                "host-bits",
                span,
                format!("`{text}` has host bits set"),
                "address is not the start of its network",
            )
            .with_help(format!("did you mean `{}`? (or `{addr}` for the single host)", net.trunc())),
        ));
    }
    Ok(net)
}
