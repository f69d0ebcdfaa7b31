//! `import --from firewalld`: one zone file (`/etc/firewalld/zones/NAME.xml`)
//! as phantomc rules, taken as the default zone and in the order firewalld's
//! nftables backend evaluates a packet, with firewalld's own rules (which no
//! zone file holds) in their places: established and related accepted,
//! loopback accepted, invalid dropped, neighbour discovery accepted; then the
//! zone's deny rich rules and ICMP blocks, its allow rich rules, services and
//! ports; ICMP accepted; then the zone target (`default` rejects with
//! admin-prohibited). Forwarding: the same defaults, 6to4 destinations
//! rejected, `<forward/>` to the zone's interfaces and sources, the target.
//! Services come from firewalld's service files (`--services DIR`) or a
//! built-in table of common ones. The IPv6 reverse-path filter
//! (`IPv6_rpfilter=yes`, firewalld.conf's default) runs in prerouting, as
//! `early` rules: an early `pass` exempts neighbour discovery, then
//! `block in ipv6 from urpf-failed early`. firewalld.conf, when given, sets
//! that filter and the 6to4 rejects (see [`super::firewalld_conf`]).

use std::collections::BTreeMap;
use std::path::Path;

use crate::ir::names;

use super::firewalld_conf::{DaemonConf, Setting};
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

/// Addresses firewalld rejects on the forward and output hooks when
/// `RFC3964_IPv4=yes` (its default): IPv4-compatible, IPv4-mapped and the
/// 6to4 forms of private, loopback, link-local and multicast IPv4.
const RFC3964_IPV4: &str = "{ ::/96, ::ffff:0.0.0.0/96, 2002::/24, 2002:a00::/24, 2002:7f00::/24, 2002:a9fe::/32, \
                            2002:ac10::/28, 2002:c0a8::/32, 2002:e000::/19 }";

/// firewalld's IPv6 reverse-path filter, as its ruleset has it: a chain on
/// prerouting (before routing and conntrack) that accepts router adverts
/// and neighbour solicitations, which ends that chain for them, then drops
/// every other IPv6 packet whose source fails the check. phantomc's early
/// chain is the same place, and an early `pass` the same exemption.
fn rpfilter(setting: &Setting) -> Vec<Line> {
    if !setting.on {
        return Vec::new();
    }
    let chain = format!("firewalld filter_PREROUTING ({})", setting.origin("IPv6_rpfilter"));
    vec![
        Line {
            statement: "pass in ipv6 proto icmpv6 icmp-type { nd-router-advert, nd-neighbor-solicit } early".into(),
            origin: format!(
                "{chain}: `icmpv6 type {{ nd-router-advert, nd-neighbor-solicit }} accept` (ends that chain only)"
            ),
        },
        Line {
            statement: "block in ipv6 from urpf-failed early".into(),
            origin: format!("{chain}: `meta nfproto ipv6 fib saddr . mark . iif oif missing drop`"),
        },
    ]
}

/// firewalld's own rules, which no zone file holds: `(hook, statement,
/// what firewalld's ruleset says)` for each hook, in its order, before
/// the zones (`RFC3964_IPv4=yes`, its default, adds the 6to4 rejects).
fn firewalld_rules(hook: &str, rfc3964: &Setting) -> Vec<(String, String)> {
    let chain = format!("firewalld filter_{}", hook.to_uppercase());
    let dir = match hook {
        "input" => "in",
        "forward" => "forward",
        _ => "out",
    };
    let lo = if hook == "output" { "oifname" } else { "iifname" };
    let mut rules = vec![(
        format!("pass {dir} state {{ established, related }}"),
        format!("{chain}: ct state {{ established, related }} accept"),
    )];
    let on = match hook {
        "forward" => "in on",
        _ => "on",
    };
    rules.push((format!("pass {dir} {on} lo"), format!("{chain}: {lo} \"lo\" accept")));
    if hook != "output" {
        rules.push((format!("block {dir} state invalid"), format!("{chain}: ct state invalid drop")));
    }
    if hook != "input" && rfc3964.on {
        rules.push((
            format!("reject {dir} ipv6 to {RFC3964_IPV4} with icmpv6 addr-unreachable"),
            format!(
                "{chain}: ip6 daddr {{ IPv4-compatible, mapped and 6to4 }} reject ({})",
                rfc3964.origin("RFC3964_IPv4")
            ),
        ));
    }
    if hook == "input" {
        rules.push((
            "pass in proto icmpv6 icmp-type { nd-neighbor-advert, nd-neighbor-solicit, nd-router-advert, nd-redirect }"
                .into(),
            "firewalld policy allow-host-ipv6: neighbour discovery accepted before every zone's rules".into(),
        ));
    }
    rules
}

/// Imports one zone file, with firewalld.conf's settings (`conf`; its
/// defaults without the file).
pub fn import(name: &str, text: &str, services: Option<&Path>, conf: &DaemonConf) -> Result<Imported, ImportError> {
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
    // The zone's interfaces and source networks (what <forward/> lets
    // packets out to), each with its origin.
    let mut ifaces: Vec<(String, String)> = Vec::new();
    let mut sources: Vec<(String, String)> = Vec::new();
    let mut forward = None;
    let mut forward_ports = false;
    for n in zone.children().filter(roxmltree::Node::is_element) {
        let origin = format!("{}: {}", at(n), src(n));
        match n.tag_name().name() {
            "short" | "description" => {}
            "interface" => match n.attribute("name") {
                // firewalld's wildcard `eth+` is nft's `eth*`.
                Some(i) => {
                    ifaces.push((i.strip_suffix('+').map_or_else(|| i.to_string(), |p| format!("{p}*")), origin))
                }
                None => skip(&mut out, n, "an interface without a name"),
            },
            "source" => match n.attribute("address") {
                Some(a) => sources.push((a.to_string(), origin)),
                None => skip(&mut out, n, "a source by MAC address or ipset"),
            },
            "forward" => forward = Some(origin),
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
            "forward-port" => {
                forward_ports = true;
                skip(&mut out, n, "no phantomc translation")
            }
            _ => skip(&mut out, n, "no phantomc translation"),
        }
    }
    let bound: Vec<&str> = ifaces.iter().chain(&sources).map(|(i, _)| i.as_str()).collect();
    let on = if bound.is_empty() { String::new() } else { format!(" (bound to {})", bound.join(", ")) };
    out.header.push(format!("as the default zone: every packet goes through it{on}"));
    out.header.push(format!(
        "firewalld's own rules (no zone file holds them) come first, as its nftables ruleset has them; its \
         `ct status dnat accept` lets in what its forward ports translate{}",
        if forward_ports { ": this zone's are listed below as not translated" } else { " (this zone has none)" }
    ));
    let ours = |hook| {
        firewalld_rules(hook, &conf.rfc3964_ipv4).into_iter().map(|(statement, origin)| Line { statement, origin })
    };
    out.rules.extend(rpfilter(&conf.ipv6_rpfilter));
    out.rules.extend(ours("input"));
    out.rules.extend(deny);
    out.rules.extend(allow);
    let target = zone.attribute("target").unwrap_or("default");
    let origin = format!("{}: zone target {target}", at(zone));
    // The zone target ends both the zone's input chain and its forward chain.
    let target_rules = |dir: &str| -> Result<Vec<Line>, ImportError> {
        let origin = origin.clone();
        Ok(match target {
            "default" | "%%REJECT%%" => {
                let mut rules = Vec::new();
                if dir == "in" {
                    rules.push(Line {
                        statement: "pass in proto { icmp, icmpv6 }".into(),
                        origin: format!("{origin}: ICMP accepted"),
                    });
                }
                rules.push(Line { statement: format!("reject {dir} with icmpx admin-prohibited"), origin });
                rules
            }
            "DROP" => vec![Line { statement: format!("block {dir}"), origin }],
            "ACCEPT" => vec![Line { statement: format!("pass {dir}"), origin }],
            other => {
                return Err(ImportError {
                    at: at(zone),
                    message: format!("zone target `{other}` is not default, ACCEPT, DROP or %%REJECT%%"),
                })
            }
        })
    };
    out.rules.extend(target_rules("in")?);
    let mut forward_rules: Vec<Line> = ours("forward").collect();
    // Intra-zone forwarding: firewalld accepts what leaves through one of
    // the zone's interfaces or to one of its sources (never for the
    // default zone's catch-all), whatever it came in on.
    if let Some(forward) = forward {
        for (iface, bound) in &ifaces {
            forward_rules.push(Line {
                statement: format!("pass forward out on {iface}"),
                origin: format!("{forward} (intra-zone forwarding, {bound})"),
            });
        }
        for (net, bound) in &sources {
            forward_rules.push(Line {
                statement: format!("pass forward to {net}"),
                origin: format!("{forward} (intra-zone forwarding, {bound})"),
            });
        }
        if ifaces.is_empty() && sources.is_empty() {
            out.header.push("<forward/> forwards nothing: the zone has no interface or source".into());
        }
    }
    forward_rules.extend(target_rules("forward")?);
    out.rules.extend(forward_rules);
    out.rules.extend(ours("output"));
    out.declarations.extend([
        Line {
            statement: "policy input block".into(),
            origin: "every packet is decided by the zone's last rule".into(),
        },
        Line {
            statement: "policy forward block".into(),
            origin: "every packet is decided by the zone's last forward rule".into(),
        },
        Line { statement: "policy output pass".into(), origin: "firewalld's output chain accepts".into() },
    ]);
    out.header.push(if conf.ipv6_rpfilter.on {
        format!(
            "{}: IPv6 packets whose source fails the reverse-path check are dropped in prerouting, before routing \
             and conntrack: `early` rules, for this host and forwarded packets",
            conf.ipv6_rpfilter.origin("IPv6_rpfilter")
        )
    } else if conf.untranslated.iter().any(|u| u.text.starts_with("IPv6_rpfilter=")) {
        format!("{}: no reverse-path rule imported (see below)", conf.ipv6_rpfilter.origin("IPv6_rpfilter"))
    } else {
        format!("{}: no reverse-path filter", conf.ipv6_rpfilter.origin("IPv6_rpfilter"))
    });
    if let Some((default, origin)) = &conf.default_zone {
        let file_zone = Path::new(name).file_stem().and_then(|s| s.to_str()).unwrap_or_default();
        out.header.push(if default == file_zone {
            format!("{origin}: this zone is firewalld's default zone")
        } else {
            format!("{origin}: firewalld's default zone is `{default}`; this file would be zone `{file_zone}`, imported as if it were the default one")
        });
    }
    out.untranslated.extend(conf.untranslated.iter().cloned());
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
