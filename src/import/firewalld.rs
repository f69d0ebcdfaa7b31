//! `import --from firewalld`: one zone file (`/etc/firewalld/zones/NAME.xml`)
//! as phantomc rules, in the order firewalld's nftables backend evaluates an
//! inbound packet: established and related accepted, invalid dropped,
//! loopback accepted; then the zone's deny rich rules and ICMP blocks, its
//! allow rich rules, services and ports; ICMP accepted; then the zone target
//! (`default` rejects with admin-prohibited). Services come from firewalld's
//! service files (`--services DIR`) or a built-in table of common ones.

use std::collections::BTreeMap;
use std::path::Path;

use crate::ir::names;

use super::{sort_by_line, ImportError, Imported, Line, Untranslated};

/// Common firewalld services (as in /usr/lib/firewalld/services).
const SERVICES: &[(&str, &[(&str, &str)])] = &[
    ("ssh", &[("tcp", "22")]),
    ("http", &[("tcp", "80")]),
    ("https", &[("tcp", "443")]),
    ("http3", &[("udp", "443")]),
    ("dns", &[("tcp", "53"), ("udp", "53")]),
    ("dhcp", &[("udp", "67")]),
    ("dhcpv6-client", &[("udp", "546")]),
    ("mdns", &[("udp", "5353")]),
    ("cockpit", &[("tcp", "9090")]),
    ("postgresql", &[("tcp", "5432")]),
    ("mysql", &[("tcp", "3306")]),
    ("redis", &[("tcp", "6379")]),
    ("smtp", &[("tcp", "25")]),
    ("smtps", &[("tcp", "465")]),
    ("submission", &[("tcp", "587")]),
    ("imap", &[("tcp", "143")]),
    ("imaps", &[("tcp", "993")]),
    ("pop3", &[("tcp", "110")]),
    ("pop3s", &[("tcp", "995")]),
    ("ntp", &[("udp", "123")]),
    ("ldap", &[("tcp", "389")]),
    ("ldaps", &[("tcp", "636")]),
    ("wireguard", &[("udp", "51820")]),
    ("openvpn", &[("udp", "1194")]),
];

/// A service: its (protocol, port) pairs and the destinations it is
/// limited to, as (family keyword, network).
struct Service {
    ports: Vec<(String, String)>,
    destinations: Vec<(&'static str, String)>,
}

/// A service: from `dir/NAME.xml` when given and present, else the table.
fn service(name: &str, dir: Option<&Path>) -> Result<Option<Service>, String> {
    if let Some(path) = dir.map(|d| d.join(format!("{name}.xml"))).filter(|p| p.exists()) {
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let doc = roxmltree::Document::parse(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let ports = doc
            .descendants()
            .filter(|n| n.has_tag_name("port"))
            .filter_map(|n| Some((n.attribute("protocol")?.to_string(), n.attribute("port")?.to_string())))
            .collect();
        let destinations = doc
            .descendants()
            .filter(|n| n.has_tag_name("destination"))
            .flat_map(|n| {
                [("ipv4", n.attribute("ipv4")), ("ipv6", n.attribute("ipv6"))]
                    .into_iter()
                    .filter_map(|(f, a)| Some((f, a?.to_string())))
            })
            .collect();
        return Ok(Some(Service { ports, destinations }));
    }
    Ok(SERVICES.iter().find(|(n, _)| *n == name).map(|(n, ports)| Service {
        ports: ports.iter().map(|(p, n)| (p.to_string(), n.to_string())).collect(),
        // As firewalld's dhcpv6-client.xml: replies come to the link-local address.
        destinations: if *n == "dhcpv6-client" { vec![("ipv6", "fe80::/64".into())] } else { Vec::new() },
    }))
}

/// Imports one zone file.
pub fn import(name: &str, text: &str, services: Option<&Path>) -> Result<Imported, ImportError> {
    let doc = roxmltree::Document::parse(text).map_err(|e| ImportError {
        at: format!("{name}:{}", e.pos().row),
        message: format!("not a firewalld zone file: {e}"),
    })?;
    let zone = doc.root_element();
    if !zone.has_tag_name("zone") {
        return Err(ImportError {
            at: format!("{name}:1"),
            message: format!("<{}> is not a <zone>", zone.tag_name().name()),
        });
    }
    let line = |n: roxmltree::Node| doc.text_pos_at(n.range().start).row;
    let at = |n: roxmltree::Node| format!("{name}:{}", line(n));
    let src = |n: roxmltree::Node| text[n.range()].split_whitespace().collect::<Vec<_>>().join(" ");
    let mut out = Imported { header: vec![format!("{name}: firewalld zone")], ..Imported::default() };
    let (mut deny, mut allow): (Vec<Line>, Vec<Line>) = (Vec::new(), Vec::new());
    let skip = |out: &mut Imported, n: roxmltree::Node, reason: &str| {
        out.untranslated.push(Untranslated { at: at(n), text: src(n), reason: reason.into() })
    };
    let mut ifaces = Vec::new();
    for n in zone.children().filter(roxmltree::Node::is_element) {
        let origin = format!("{}: {}", at(n), src(n));
        match n.tag_name().name() {
            "short" | "description" => {}
            "interface" => ifaces.extend(n.attribute("name").map(String::from)),
            "service" => {
                let svc = n.attribute("name").unwrap_or_default();
                match service(svc, services).map_err(|m| ImportError { at: at(n), message: m })? {
                    Some(Service { ports, destinations }) => {
                        for (proto, port) in ports {
                            let port = port.replace(':', "-");
                            let statements: Vec<String> = if destinations.is_empty() {
                                vec![format!("pass in proto {proto} to port {port}")]
                            } else {
                                destinations
                                    .iter()
                                    .map(|(family, net)| format!("pass in {family} proto {proto} to {net} port {port}"))
                                    .collect()
                            };
                            for statement in statements {
                                allow.push(Line { statement, origin: format!("{origin} (service {svc})") });
                            }
                        }
                    }
                    None => skip(&mut out, n, "an unknown service: give its file with --services DIR"),
                }
            }
            "port" => match (n.attribute("protocol"), n.attribute("port")) {
                (Some(p), Some(port)) => allow
                    .push(Line { statement: format!("pass in proto {p} to port {}", port.replace(':', "-")), origin }),
                _ => skip(&mut out, n, "a port without protocol or number"),
            },
            "icmp-block" => {
                let t = n.attribute("name").unwrap_or_default();
                // firewalld names one type for both families where each has it.
                let families = [("icmp", names::ICMP_TYPES), ("icmpv6", names::ICMPV6_TYPES)];
                let known: Vec<&str> =
                    families.iter().filter(|(_, types)| types.iter().any(|(x, _)| *x == t)).map(|(p, _)| *p).collect();
                if known.is_empty() {
                    skip(&mut out, n, "an ICMP type phantomc does not know");
                }
                for proto in known {
                    deny.push(Line {
                        statement: format!("reject in proto {proto} icmp-type {t} with icmpx admin-prohibited"),
                        origin: origin.clone(),
                    });
                }
            }
            "rule" => match rich_rule(n, services) {
                Ok((statements, is_deny)) => {
                    let lines = statements.into_iter().map(|s| Line { statement: s, origin: origin.clone() });
                    if is_deny {
                        deny.extend(lines);
                    } else {
                        allow.extend(lines);
                    }
                }
                Err(reason) => skip(&mut out, n, &reason),
            },
            _ => skip(&mut out, n, "no phantomc translation"),
        }
    }
    let on = if ifaces.is_empty() { String::new() } else { format!(" (bound to {})", ifaces.join(", ")) };
    out.header.push(format!("as the only zone: every inbound packet goes through it{on}"));
    let base = [
        ("pass in state { established, related }", "firewalld filter_INPUT: ct state established,related accept"),
        ("block in state invalid", "firewalld filter_INPUT: ct state invalid drop"),
        ("pass in on lo", "firewalld filter_INPUT: iifname lo accept"),
    ];
    out.rules.extend(base.map(|(s, o)| Line { statement: s.into(), origin: o.into() }));
    out.rules.extend(deny);
    out.rules.extend(allow);
    let target = zone.attribute("target").unwrap_or("default");
    let origin = format!("{}: zone target {target}", at(zone));
    match target {
        "default" | "%%REJECT%%" => {
            out.rules.push(Line {
                statement: "pass in proto { icmp, icmpv6 }".into(),
                origin: format!("{origin}: ICMP accepted"),
            });
            out.rules.push(Line { statement: "reject in with icmpx admin-prohibited".into(), origin });
        }
        "DROP" => out.rules.push(Line { statement: "block in".into(), origin }),
        "ACCEPT" => out.rules.push(Line { statement: "pass in".into(), origin }),
        other => {
            return Err(ImportError {
                at: at(zone),
                message: format!("zone target `{other}` is not default, ACCEPT, DROP or %%REJECT%%"),
            })
        }
    }
    out.declarations.extend([
        Line {
            statement: "policy input block".into(),
            origin: "every packet is decided by the zone's last rule".into(),
        },
        Line {
            statement: "policy forward block".into(),
            origin: "firewalld's default: no forwarding between zones".into(),
        },
        Line { statement: "policy output pass".into(), origin: "firewalld does not filter output".into() },
    ]);
    sort_by_line(&mut out.untranslated);
    Ok(out)
}

/// A rich rule: its statements and whether it denies (firewalld evaluates
/// deny rules before allow rules).
fn rich_rule(n: roxmltree::Node, services: Option<&Path>) -> Result<(Vec<String>, bool), String> {
    let family = match n.attribute("family") {
        Some("ipv4") => " ipv4",
        Some("ipv6") => " ipv6",
        None => "",
        Some(other) => return Err(format!("family {other}")),
    };
    if n.attribute("priority").is_some_and(|p| p != "0") {
        return Err("a rich rule priority".into());
    }
    let mut from = String::new();
    let mut to = String::new();
    let mut ports: Vec<(String, String)> = Vec::new();
    let mut action = None;
    let mut extra = String::new();
    let parts: BTreeMap<&str, roxmltree::Node> =
        n.children().filter(roxmltree::Node::is_element).map(|c| (c.tag_name().name(), c)).collect();
    for (tag, c) in &parts {
        let invert = matches!(c.attribute("invert"), Some("true" | "True" | "yes"));
        let not = if invert { "! " } else { "" };
        match *tag {
            "source" => from = format!(" from {not}{}", c.attribute("address").ok_or("a source without an address")?),
            "destination" => {
                to = format!(" to {not}{}", c.attribute("address").ok_or("a destination without an address")?)
            }
            "service" => {
                let svc = c.attribute("name").unwrap_or_default();
                let service = service(svc, services)?.ok_or_else(|| format!("unknown service {svc}"))?;
                if !service.destinations.is_empty() {
                    return Err(format!("service {svc} has its own destination"));
                }
                ports = service.ports;
            }
            "port" => {
                ports = vec![(
                    c.attribute("protocol").unwrap_or("tcp").into(),
                    c.attribute("port").unwrap_or_default().into(),
                )]
            }
            "accept" | "drop" | "reject" => {
                action = Some(match *tag {
                    "accept" => "pass",
                    "drop" => "block",
                    _ => "reject",
                });
                if let Some(l) = c.children().find(|x| x.has_tag_name("limit")) {
                    extra.push_str(&format!(" limit {}", rate(l.attribute("value").unwrap_or_default())?));
                }
                if *tag == "reject" && c.attribute("type").is_some() {
                    return Err("a reject with a type".into());
                }
            }
            "log" => {
                extra.push_str(&format!(" log \"{}\"", c.attribute("prefix").unwrap_or("").trim().replace('"', "'")))
            }
            other => return Err(format!("rich rule element <{other}>")),
        }
    }
    let action = action.ok_or("a rich rule without accept, drop or reject")?;
    let head = format!("{action} in{family}");
    let statements = if ports.is_empty() {
        vec![format!("{head}{from}{to}{extra}")]
    } else {
        ports
            .iter()
            .map(|(p, port)| {
                let to = if to.is_empty() { " to any".to_string() } else { to.clone() };
                format!("{head} proto {p}{from}{to} port {}{extra}", port.replace(':', "-"))
            })
            .collect()
    };
    Ok((statements, action != "pass"))
}

/// firewalld's `3/m` as `3/minute`.
fn rate(v: &str) -> Result<String, String> {
    let (n, unit) = v.split_once('/').ok_or_else(|| format!("limit {v}"))?;
    let unit = match unit {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        other => return Err(format!("limit unit {other}")),
    };
    Ok(format!("{n}/{unit}"))
}
