//! `import --from iptables` (and `--from ufw`): `iptables-save` /
//! `ip6tables-save` output, or ufw's user rules files (the same format), as
//! phantomc rules. The built-in chains of the `filter` table become the
//! input, forward and output hooks; a jump into a user chain is inlined with
//! the jumping rule's matches; `nat` POSTROUTING and PREROUTING (with the
//! user chains they jump to, as Docker's DOCKER chain) become masquerade,
//! snat and dnat rules; `-m addrtype --dst-type LOCAL` is `to self`.
//! Anything else is reported by line.

use std::collections::BTreeSet;

use super::{ImportError, Imported, Line, Untranslated};
use crate::ir::Ifaces;
use crate::nft::iptables_save::{self, SaveFile, SaveRule, SaveTable};

/// Which dialect of the save format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    /// `iptables-save`: built-in chains are the hooks.
    Iptables,
    /// ufw's `user.rules` / `user6.rules`: `ufw-user-input` and friends are the
    /// hooks, with ufw's defaults around them.
    Ufw,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fam {
    V4,
    V6,
}

impl Fam {
    fn keyword(self) -> &'static str {
        match self {
            Fam::V4 => "ipv4",
            Fam::V6 => "ipv6",
        }
    }
}

/// The family of a save file: IPv6 when its name or content says so.
fn family_of(name: &str, text: &str, save: &SaveFile) -> Fam {
    let base = std::path::Path::new(name).file_name().map(|f| f.to_string_lossy().to_string()).unwrap_or_default();
    let v6_rules = save.tables.iter().flat_map(|t| &t.rules).any(|r| {
        ["-s", "-d"].iter().any(|o| r.value(o).is_some_and(|v| v.contains(':')))
            || r.args.iter().any(|a| a == "icmp6" || a == "ipv6-icmp" || a == "--icmpv6-type")
    });
    if v6_rules || base.contains("ip6") || base.contains("user6") || text.contains("ip6tables") {
        Fam::V6
    } else {
        Fam::V4
    }
}

/// A ufw user rules file as ufw loads it: its chains under INPUT, FORWARD
/// and OUTPUT with ufw's defaults and the before rules the import assumes
/// (loopback, established and related, invalid), for `--verify`.
pub fn ufw_as_loaded(text: &str, v6: bool) -> String {
    let prefix = if v6 { "ufw6" } else { "ufw" };
    let mut out = String::new();
    let mut in_filter = false;
    for line in text.lines() {
        let l = line.trim();
        if l == "COMMIT" && in_filter {
            for rule in [
                "-A INPUT -i lo -j ACCEPT".to_string(),
                "-A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".into(),
                "-A INPUT -m conntrack --ctstate INVALID -j DROP".into(),
                format!("-A INPUT -j {prefix}-user-input"),
                format!("-A FORWARD -j {prefix}-user-forward"),
                format!("-A OUTPUT -j {prefix}-user-output"),
            ] {
                out.push_str(&rule);
                out.push('\n');
            }
            in_filter = false;
        }
        out.push_str(line);
        out.push('\n');
        if l == "*filter" {
            in_filter = true;
            out.push_str(":INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n");
        }
    }
    out
}

/// Is this save file IPv6 (ip6tables-save, user6.rules)?
pub fn is_ipv6(name: &str, text: &str) -> bool {
    iptables_save::parse(text).is_ok_and(|save| family_of(name, text, &save) == Fam::V6)
}

/// Imports save files (name, text), in order: IPv4 and IPv6 files may be mixed.
pub fn import(files: &[(String, String)], dialect: Dialect) -> Result<Imported, ImportError> {
    let mut out = Imported::default();
    let mut policies: Vec<(&'static str, &'static str, String)> = Vec::new();
    let mut sets = BTreeSet::new();
    let mut files_rules = 0;
    if files.is_empty() {
        return Err(ImportError { at: "import".into(), message: "no input file".into() });
    }
    for (name, text) in files {
        let save = iptables_save::parse(text)
            .map_err(|e| ImportError { at: format!("{name}:{}", e.line), message: e.message })?;
        let fam = family_of(name, text, &save);
        files_rules += save.tables.iter().map(|t| t.rules.len()).sum::<usize>();
        if let Some((line, m)) = unknown_match(&save) {
            return Err(ImportError {
                at: format!("{name}:{line}"),
                message: format!("unknown match `-m {m}`: not an iptables match module"),
            });
        }
        out.header.push(format!(
            "{name}: {} rules, {} ({})",
            match dialect {
                Dialect::Iptables => "iptables-save",
                Dialect::Ufw => "ufw user",
            },
            fam.keyword(),
            save.tables.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(", ")
        ));
        let mut file = FileImport { name, fam, out: &mut out, sets: &mut sets };
        for t in &save.tables {
            match (t.name.as_str(), dialect) {
                ("filter", Dialect::Iptables) => {
                    for (chain, hook) in [("INPUT", "input"), ("FORWARD", "forward"), ("OUTPUT", "output")] {
                        if let Some(c) = t.chain(chain) {
                            let action = match c.policy.as_deref() {
                                Some("DROP") => "block",
                                _ => "pass",
                            };
                            policies.push((
                                hook,
                                action,
                                format!("{name}:{}: :{chain} {}", c.line, c.policy.as_deref().unwrap_or("-")),
                            ));
                            file.chain(t, chain, hook, &Cond::default(), &[], 0);
                        }
                    }
                }
                ("filter", Dialect::Ufw) => {
                    for (suffix, hook) in [("input", "input"), ("forward", "forward"), ("output", "output")] {
                        for prefix in ["ufw-user-", "ufw6-user-"] {
                            let chain = format!("{prefix}{suffix}");
                            if t.chain(&chain).is_some() {
                                file.chain(t, &chain, hook, &Cond::default(), &[], 0);
                            }
                        }
                    }
                }
                ("nat", Dialect::Iptables) => file.nat(t),
                _ => {
                    for r in &t.rules {
                        file.skip(r, &format!("table {} has no phantomc translation", t.name));
                    }
                }
            }
        }
    }
    if dialect == Dialect::Ufw {
        for (hook, action) in [("input", "block"), ("forward", "block"), ("output", "pass")] {
            policies.push((hook, action, format!("ufw default (DEFAULT_{}_POLICY)", hook.to_uppercase())));
        }
        // ufw's before rules, which its user rules rely on.
        out.rules.splice(
            0..0,
            [
                ("pass in on lo", "ufw before.rules: -A ufw-before-input -i lo -j ACCEPT"),
                (
                    "pass in state { established, related }",
                    "ufw before.rules: -A ufw-before-input -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
                ),
                (
                    "block in state invalid",
                    "ufw before.rules: -A ufw-before-input -m conntrack --ctstate INVALID -j DROP",
                ),
            ]
            .map(|(s, o)| Line { statement: s.into(), origin: o.into() }),
        );
        out.header.push("ufw's before.rules beyond loopback, established and invalid (ICMP, DHCP, multicast) are not in user rules: add what you need".into());
    }
    for set in &sets {
        out.declarations.push(Line {
            statement: format!("set {set} dynamic"),
            origin: format!(
                "ipset {set}: fill it with `phantomc block --set {set} ADDR` (ipset contents are not in a save file)"
            ),
        });
    }
    if files_rules == 0 {
        return Err(ImportError {
            at: format!("{}:1", files[0].0),
            message: "an empty ruleset: no rule in any table (nothing to import)".into(),
        });
    }
    super::sort_by_line(&mut out.untranslated);
    if dialect == Dialect::Iptables {
        // Without a filter chain on a hook the kernel accepts; phantomc's
        // built-in defaults for input and forward block.
        for hook in ["input", "forward", "output"] {
            if !policies.iter().any(|p| p.0 == hook) {
                policies.push((hook, "pass", format!("no filter {} chain: the kernel accepts", hook.to_uppercase())));
            }
        }
    }
    let mut seen = BTreeSet::new();
    for (hook, action, origin) in policies {
        if seen.insert(hook) {
            out.declarations.push(Line { statement: format!("policy {hook} {action}"), origin });
        } else if !out.declarations.iter().any(|l| l.statement == format!("policy {hook} {action}")) {
            out.untranslated.push(Untranslated {
                at: origin.split(": ").next().unwrap_or_default().to_string(),
                text: origin.clone(),
                reason: format!(
                    "a second, different default for {hook}: phantomc has one default per hook for both families"
                ),
            });
        }
    }
    Ok(out)
}

/// iptables match modules (extensions), translated or not.
const KNOWN_MATCHES: &[&str] = &[
    "addrtype",
    "ah",
    "bpf",
    "cgroup",
    "cluster",
    "comment",
    "connbytes",
    "connlabel",
    "connlimit",
    "connmark",
    "conntrack",
    "cpu",
    "dccp",
    "devgroup",
    "dscp",
    "dst",
    "ecn",
    "esp",
    "eui64",
    "frag",
    "hashlimit",
    "hbh",
    "helper",
    "hl",
    "icmp",
    "icmp6",
    "iprange",
    "ipv6header",
    "ipvs",
    "length",
    "limit",
    "mac",
    "mark",
    "mh",
    "multiport",
    "nfacct",
    "osf",
    "owner",
    "physdev",
    "pkttype",
    "policy",
    "quota",
    "rateest",
    "realm",
    "recent",
    "rpfilter",
    "rt",
    "sctp",
    "set",
    "socket",
    "state",
    "statistic",
    "string",
    "tcp",
    "tcpmss",
    "time",
    "tos",
    "ttl",
    "u32",
    "udp",
    "udplite",
];

/// The first `-m NAME` that is no iptables match at all (a typo, garbage).
fn unknown_match(save: &SaveFile) -> Option<(usize, String)> {
    save.tables.iter().flat_map(|t| &t.rules).find_map(|r| {
        let m = r
            .args
            .windows(2)
            .find(|w| (w[0] == "-m" || w[0] == "--match") && !KNOWN_MATCHES.contains(&w[1].as_str()))?;
        Some((r.line, m[1].clone()))
    })
}

struct FileImport<'a> {
    name: &'a str,
    fam: Fam,
    out: &'a mut Imported,
    sets: &'a mut BTreeSet<String>,
}

/// Matches of one rule (or of a chain of jumps, conjoined).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Cond {
    pub proto: Option<String>,
    pub src: Option<(bool, String)>,
    pub dst: Option<(bool, String)>,
    pub sport: Option<(bool, String)>,
    pub dport: Option<(bool, String)>,
    pub iif: Option<Ifaces>,
    pub oif: Option<Ifaces>,
    pub state: Option<String>,
    pub icmp_type: Option<String>,
    pub limit: Option<String>,
    /// `ipv4` or `ipv6` when the rule is for one family only.
    pub family: Option<&'static str>,
    /// `-m addrtype [!] --dst-type LOCAL`: `to self` (or `to !self`).
    pub local: Option<bool>,
}

impl Cond {
    /// Both at once; `None` when both constrain the same field.
    pub fn and(&self, other: &Cond) -> Option<Cond> {
        fn one<T: Clone + PartialEq>(a: &Option<T>, b: &Option<T>) -> Result<Option<T>, ()> {
            match (a, b) {
                (Some(x), Some(y)) if x != y => Err(()),
                (Some(x), _) | (_, Some(x)) => Ok(Some(x.clone())),
                _ => Ok(None),
            }
        }
        // Interfaces conjoin exactly (`! -o docker0` then `-o br-x` is `out on br-x`).
        fn ifaces(a: &Option<Ifaces>, b: &Option<Ifaces>) -> Result<Option<Ifaces>, ()> {
            match (a, b) {
                (Some(x), Some(y)) => x.and(y).map(Some).ok_or(()),
                (Some(x), None) | (None, Some(x)) => Ok(Some(x.clone())),
                (None, None) => Ok(None),
            }
        }
        let f = || -> Result<Cond, ()> {
            Ok(Cond {
                proto: one(&self.proto, &other.proto)?,
                src: one(&self.src, &other.src)?,
                dst: one(&self.dst, &other.dst)?,
                sport: one(&self.sport, &other.sport)?,
                dport: one(&self.dport, &other.dport)?,
                iif: ifaces(&self.iif, &other.iif)?,
                oif: ifaces(&self.oif, &other.oif)?,
                state: one(&self.state, &other.state)?,
                icmp_type: one(&self.icmp_type, &other.icmp_type)?,
                limit: one(&self.limit, &other.limit)?,
                family: one(&self.family, &other.family)?,
                local: one(&self.local, &other.local)?,
            })
        };
        f().ok()
    }

    /// No packet can match both: their input or output interfaces exclude each other.
    pub fn interfaces_disjoint(&self, other: &Cond) -> bool {
        let disjoint =
            |a: &Option<Ifaces>, b: &Option<Ifaces>| a.as_ref().zip(b.as_ref()).is_some_and(|(a, b)| a.disjoint(b));
        disjoint(&self.iif, &other.iif) || disjoint(&self.oif, &other.oif)
    }

    /// Why the destination cannot be written: `to self` takes the place of
    /// the addresses, so beside it only excluded ones (`self except X`) fit.
    pub fn self_conflict(&self) -> Option<&'static str> {
        match (self.local, &self.dst) {
            (Some(true), Some((false, _))) => {
                Some("`--dst-type LOCAL` with a destination address: `to self` takes the place of the addresses")
            }
            (Some(false), Some(_)) => {
                Some("`! --dst-type LOCAL` with a destination address: `to !self` takes no other")
            }
            _ => None,
        }
    }

    /// What the rest of a chain sees after a RETURN on `ret` (an
    /// interface-only match): these packets but not `ret`'s; `None` when
    /// none is left.
    pub fn after_return(&self, ret: &Cond) -> Option<Cond> {
        let negate = |i: &Option<Ifaces>| i.as_ref().map(|i| Ifaces { negated: !i.negated, ..i.clone() });
        self.and(&Cond { iif: negate(&ret.iif), oif: negate(&ret.oif), ..Cond::default() })
    }

    /// The rule's only match is on one interface (besides its family).
    pub fn interface_only(&self) -> bool {
        let bare = Cond { family: None, iif: None, oif: None, ..self.clone() };
        bare == Cond::default() && self.iif.is_some() != self.oif.is_some()
    }

    /// Matches nothing but (maybe) the family: every packet of the chain.
    pub fn is_unconditional(&self) -> bool {
        Cond { family: None, ..self.clone() } == Cond::default()
    }

    /// The rule's options after its direction.
    pub fn options(&self, hook: &str) -> String {
        let mut w: Vec<String> = Vec::new();
        match hook {
            "input" => w.extend(self.iif.as_ref().map(|i| format!("on {}", i.to_policy()))),
            "output" => w.extend(self.oif.as_ref().map(|i| format!("on {}", i.to_policy()))),
            _ => {
                w.extend(self.iif.as_ref().map(|i| format!("in on {}", i.to_policy())));
                w.extend(self.oif.as_ref().map(|i| format!("out on {}", i.to_policy())));
            }
        }
        w.extend(self.family.map(String::from));
        w.extend(self.proto.as_ref().map(|p| format!("proto {p}")));
        let side = |w: &mut Vec<String>, word: &str, host: &Option<(bool, String)>, port: &Option<(bool, String)>| {
            if host.is_none() && port.is_none() {
                return;
            }
            w.push(word.into());
            match (host, self.local.filter(|_| word == "to")) {
                (Some((true, h)), Some(true)) => w.push(format!("self except {h}")),
                (_, Some(true)) => w.push("self".into()),
                (_, Some(false)) => w.push("!self".into()),
                (Some((neg, h)), None) => w.push(format!("{}{h}", if *neg { "! " } else { "" })),
                (None, None) => w.push("any".into()),
            }
            if let Some((neg, p)) = port {
                w.push(format!("port {}{p}", if *neg { "! " } else { "" }));
            }
        };
        side(&mut w, "from", &self.src, &self.sport);
        if self.local.is_some() && self.dst.is_none() && self.dport.is_none() {
            w.push(if self.local == Some(true) { "to self" } else { "to !self" }.into());
        }
        side(&mut w, "to", &self.dst, &self.dport);
        w.extend(self.icmp_type.as_ref().map(|t| format!("icmp-type {t}")));
        w.extend(self.state.as_ref().map(|s| format!("state {s}")));
        w.extend(self.limit.clone());
        w.join(" ")
    }
}

/// What a rule does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Target {
    Verdict { action: &'static str, with: Option<String> },
    Jump(String),
    Return,
    Nat(String),
}

impl FileImport<'_> {
    fn at(&self, line: usize) -> String {
        format!("{}:{line}", self.name)
    }

    fn skip(&mut self, r: &SaveRule, reason: &str) {
        self.out.untranslated.push(Untranslated { at: self.at(r.line), text: r.text.clone(), reason: reason.into() });
    }

    /// The rules of `chain`, under the matches `prefix` of the jumps that led here.
    fn chain(&mut self, t: &SaveTable, chain: &str, hook: &'static str, prefix: &Cond, via: &[String], depth: usize) {
        let mut prefix = prefix.clone();
        for r in t.rules_of(chain) {
            let (cond, target) = match rule(r, t, self.fam) {
                Ok(x) => x,
                Err(reason) => {
                    self.skip(r, &reason);
                    continue;
                }
            };
            if let Some(set) = &cond.1 {
                self.sets.insert(set.clone());
            }
            let Some(all) = prefix.and(&cond.0) else {
                let via = via.join(", ");
                if prefix.interfaces_disjoint(&cond.0) {
                    self.skip(
                        r,
                        &format!(
                            "never matches: reached through {via}, whose interface match excludes the one it names"
                        ),
                    );
                } else {
                    self.skip(r, &format!("reached through {via} with a match on the same field"));
                }
                continue;
            };
            if (all.sport.is_some() || all.dport.is_some()) && all.proto.is_none() {
                self.skip(r, "ports without a protocol");
                continue;
            }
            match target {
                Target::Verdict { .. } | Target::Nat(_) => match statement(hook, &all, &target) {
                    Ok(s) => {
                        let origin = std::iter::once(format!("{}: {}", self.at(r.line), r.text))
                            .chain(via.iter().rev().map(|v| format!("via {v}")))
                            .collect::<Vec<_>>()
                            .join(" ");
                        self.out.rules.push(Line { statement: s, origin });
                    }
                    Err(reason) => self.skip(r, &reason),
                },
                Target::Jump(to) if depth < 16 => {
                    let mut v = via.to_vec();
                    v.push(self.at(r.line));
                    self.chain(t, &to, hook, &all, &v, depth + 1);
                }
                Target::Jump(_) => self.skip(r, "jumps nest deeper than 16 chains"),
                Target::Return if cond.0.is_unconditional() => return,
                // Docker's `-A DOCKER -i docker0 -j RETURN`: the rest of a NAT
                // chain is for the other interfaces.
                Target::Return if is_nat(hook) && cond.0.interface_only() => match prefix.after_return(&cond.0) {
                    Some(narrowed) => prefix = narrowed,
                    None => return,
                },
                Target::Return => self.skip(
                    r,
                    "a conditional RETURN: phantomc rules cannot skip the rest of an inlined chain (the rules after it are imported as if it were absent)",
                ),
            }
        }
    }

    /// nat PREROUTING (dnat) and POSTROUTING (masquerade, snat), with the
    /// user chains they jump to; rules of the other nat chains are reported.
    fn nat(&mut self, t: &SaveTable) {
        for r in t.rules.iter().filter(|r| {
            r.chain.starts_with(char::is_uppercase) && t.chain(&r.chain).is_some_and(|c| c.policy.is_some())
        }) {
            if !matches!(r.chain.as_str(), "PREROUTING" | "POSTROUTING") {
                self.skip(
                    r,
                    &format!(
                        "nat chain {} has no phantomc translation (phantomc NATs in prerouting and postrouting only)",
                        r.chain
                    ),
                );
            }
        }
        for (chain, hook) in [("PREROUTING", "prerouting"), ("POSTROUTING", "postrouting")] {
            self.chain(t, chain, hook, &Cond::default(), &[], 0);
        }
    }
}

pub(super) fn is_nat(hook: &str) -> bool {
    matches!(hook, "prerouting" | "postrouting")
}

/// The phantomc statement of a deciding rule on `hook` under the matches `all`.
pub(super) fn statement(hook: &str, all: &Cond, target: &Target) -> Result<String, String> {
    if let Some(why) = all.self_conflict() {
        return Err(why.into());
    }
    match (target, hook) {
        (Target::Verdict { action, with }, "input" | "forward" | "output") => {
            let mut s = format!("{action} {} {}", dir(hook), all.options(hook));
            if let Some(w) = with {
                s.push_str(&format!(" with {w}"));
            }
            Ok(s)
        }
        (Target::Nat(n), "postrouting") if !n.starts_with("dnat") => {
            if all.local.is_some() {
                return Err("`--dst-type LOCAL` in POSTROUTING: phantomc's source NAT takes no `to self`".into());
            }
            let (word, to) = n.split_once(' ').unwrap_or((n, ""));
            let arrow = if to.is_empty() { String::new() } else { format!(" -> {to}") };
            Ok(format!("{word} out {}{arrow}", all.options("output")))
        }
        (Target::Nat(n), "prerouting") if n.starts_with("dnat") => {
            let to = n.trim_start_matches("dnat ");
            Ok(format!("dnat in {} -> {to}", all.options("input")))
        }
        (Target::Nat(_), "input" | "forward" | "output") => Err("a NAT target outside the nat table".into()),
        (Target::Verdict { .. }, _) => Err("a verdict in the nat table: phantomc's NAT rules only translate".into()),
        _ => Err("not a masquerade/SNAT in POSTROUTING or a DNAT in PREROUTING".into()),
    }
}

impl FileImport<'_> {}

pub(super) fn dir(hook: &str) -> &'static str {
    match hook {
        "input" => "in",
        "output" => "out",
        _ => "forward",
    }
}

/// The matches and target of one rule, and the ipset it uses; `Err` names
/// the first thing without a phantomc translation.
fn rule(r: &SaveRule, t: &SaveTable, fam: Fam) -> Result<((Cond, Option<String>), Target), String> {
    let mut c = Cond { family: Some(fam.keyword()), ..Cond::default() };
    let mut set = None;
    let mut target: Option<Target> = None;
    let mut neg = false;
    let a = &r.args;
    let mut i = 0;
    let value = |i: usize| a.get(i + 1).cloned().ok_or_else(|| format!("`{}` without a value", a[i]));
    while i < a.len() {
        let opt = a[i].as_str();
        if opt == "!" {
            neg = true;
            i += 1;
            continue;
        }
        let negated = std::mem::take(&mut neg);
        let no_neg = |what: &str| if negated { Err(format!("a negated {what} (`! {opt}`)")) } else { Ok(()) };
        match opt {
            "-4" | "-6" => {
                i += 1;
                continue;
            }
            "-s" | "--source" => c.src = Some((negated, host(&value(i)?))),
            "-d" | "--destination" => c.dst = Some((negated, host(&value(i)?))),
            "-p" | "--protocol" => {
                no_neg("protocol")?;
                let p = value(i)?;
                c.proto = match p.as_str() {
                    "all" | "0" => None,
                    "ipv6-icmp" | "icmp6" | "icmpv6" => Some("icmpv6".into()),
                    other => Some(other.to_string()),
                };
            }
            "-i" | "--in-interface" => c.iif = Some(Ifaces { negated, names: vec![value(i)?.replace('+', "*")] }),
            "-o" | "--out-interface" => c.oif = Some(Ifaces { negated, names: vec![value(i)?.replace('+', "*")] }),
            "-m" | "--match" => {
                let m = value(i)?;
                if !matches!(
                    m.as_str(),
                    "tcp"
                        | "udp"
                        | "multiport"
                        | "conntrack"
                        | "state"
                        | "limit"
                        | "icmp"
                        | "icmp6"
                        | "set"
                        | "comment"
                        | "addrtype"
                ) {
                    return Err(format!("match `-m {m}` has no phantomc translation"));
                }
            }
            "--dport" | "--destination-port" | "--dports" | "--destination-ports" => {
                c.dport = Some((negated, ports(&value(i)?)));
            }
            "--sport" | "--source-port" | "--sports" | "--source-ports" => {
                c.sport = Some((negated, ports(&value(i)?)));
            }
            "--ctstate" | "--state" => {
                no_neg("connection state")?;
                c.state = Some(states(&value(i)?)?);
            }
            "--icmp-type" | "--icmpv6-type" => {
                no_neg("ICMP type")?;
                let v = value(i)?;
                if v.contains('/') && !v.ends_with("/0") {
                    return Err(format!("ICMP type with a code ({v}): phantomc matches the type only"));
                }
                c.icmp_type = Some(v.trim_end_matches("/0").to_string());
            }
            "--limit" => c.limit = Some(format!("limit {}", rate(&value(i)?)?)),
            "--limit-burst" => {
                let b = value(i)?;
                let base = c.limit.take().ok_or("--limit-burst without --limit")?;
                c.limit = Some(format!("{base} burst {b}"));
            }
            "--match-set" => {
                let name = value(i)?;
                let dims = a.get(i + 2).cloned().ok_or("--match-set without src or dst")?;
                let side = (negated, format!("<{name}>"));
                match dims.as_str() {
                    "src" => c.src = Some(side),
                    "dst" => c.dst = Some(side),
                    other => return Err(format!("an ipset match on `{other}`: phantomc sets hold addresses")),
                }
                set = Some(name);
                i += 3;
                continue;
            }
            "--comment" => {}
            "--dst-type" => match value(i)?.as_str() {
                "LOCAL" => c.local = Some(!negated),
                other => {
                    return Err(format!("`-m addrtype --dst-type {other}`: phantomc matches LOCAL only (`to self`)"))
                }
            },
            "--src-type" | "--limit-iface-in" | "--limit-iface-out" => {
                return Err(format!("`-m addrtype {opt}` has no phantomc translation"))
            }
            "-j" | "--jump" => {
                let to = value(i)?;
                target = Some(match to.as_str() {
                    "ACCEPT" => Target::Verdict { action: "pass", with: None },
                    "DROP" => Target::Verdict { action: "block", with: None },
                    "REJECT" => {
                        let with = reject_with(r.value("--reject-with"), fam, c.proto.as_deref())?;
                        Target::Verdict { action: "reject", with }
                    }
                    "RETURN" => Target::Return,
                    "MASQUERADE" => Target::Nat("masquerade".into()),
                    "SNAT" => {
                        Target::Nat(format!("snat {}", r.value("--to-source").ok_or("SNAT without --to-source")?))
                    }
                    "DNAT" => {
                        let dest = r.value("--to-destination").ok_or("DNAT without --to-destination")?;
                        Target::Nat(format!("dnat {}", nat_destination(dest, fam)?))
                    }
                    "LOG" => {
                        return Err(
                            "LOG without a verdict: phantomc logs on the rule that decides (add `log` to it)".into()
                        )
                    }
                    user if t.chain(user).is_some() => Target::Jump(user.to_string()),
                    other => return Err(format!("target `-j {other}` has no phantomc translation")),
                });
                // The target's own options follow; those used above are read by name.
                break;
            }
            "-g" | "--goto" => {
                return Err("a goto (`-g`): the caller's later rules are skipped, which inlining cannot say".into())
            }
            other => return Err(format!("option `{other}` has no phantomc translation")),
        }
        i += 2;
    }
    let target = target.ok_or("a rule without a target (`-j`): it only counts")?;
    Ok(((c, set), target))
}

fn host(v: &str) -> String {
    v.trim_end_matches("/32").trim_end_matches("/128").to_string()
}

/// `80`, `1024:65535`, `80,443` as phantomc ports.
fn ports(v: &str) -> String {
    let items: Vec<String> = v.split(',').map(|p| p.replace(':', "-")).collect();
    if items.len() == 1 {
        items[0].clone()
    } else {
        format!("{{ {} }}", items.join(", "))
    }
}

fn states(v: &str) -> Result<String, String> {
    let mut out = Vec::new();
    for s in v.split(',') {
        let name = s.to_ascii_lowercase();
        if !matches!(name.as_str(), "new" | "established" | "related" | "invalid" | "untracked") {
            return Err(format!("connection state {s} has no phantomc translation"));
        }
        out.push(name);
    }
    Ok(if out.len() == 1 { out.remove(0) } else { format!("{{ {} }}", out.join(", ")) })
}

/// `3/min` as `3/minute`.
fn rate(v: &str) -> Result<String, String> {
    let (n, unit) = v.split_once('/').ok_or_else(|| format!("rate {v}"))?;
    let unit = match unit {
        "sec" | "second" | "s" => "second",
        "min" | "minute" | "m" => "minute",
        "hour" | "h" => "hour",
        "day" | "d" => "day",
        other => return Err(format!("rate unit {other}")),
    };
    Ok(format!("{n}/{unit}"))
}

/// iptables' REJECT answer (default icmp-port-unreachable) as phantomc's `with`.
fn reject_with(v: Option<&str>, fam: Fam, proto: Option<&str>) -> Result<Option<String>, String> {
    let kind = match fam {
        Fam::V4 => "icmp",
        Fam::V6 => "icmpv6",
    };
    let code = match v.unwrap_or(match fam {
        Fam::V4 => "icmp-port-unreachable",
        Fam::V6 => "icmp6-port-unreachable",
    }) {
        "tcp-reset" => return Ok(Some("tcp reset".into()).filter(|_| proto == Some("tcp"))),
        "icmp-port-unreachable" | "icmp6-port-unreachable" | "port-unreach" => "port-unreachable",
        "icmp-host-unreachable" => "host-unreachable",
        "icmp-net-unreachable" => "net-unreachable",
        "icmp-proto-unreachable" => "prot-unreachable",
        "icmp-host-prohibited" => "host-prohibited",
        "icmp-net-prohibited" => "net-prohibited",
        "icmp-admin-prohibited" | "icmp6-adm-prohibited" | "adm-prohibited" => "admin-prohibited",
        "icmp6-no-route" | "no-route" => "no-route",
        "icmp6-addr-unreachable" | "addr-unreach" => "addr-unreachable",
        other => return Err(format!("--reject-with {other} has no phantomc translation")),
    };
    Ok(Some(format!("{kind} {code}")))
}

/// `192.0.2.10:80` as `192.0.2.10 port 80`.
fn nat_destination(v: &str, fam: Fam) -> Result<String, String> {
    if fam == Fam::V6 || v.matches(':').count() > 1 {
        return Err(format!("an IPv6 DNAT destination ({v})"));
    }
    match v.split_once(':') {
        Some((addr, port)) if port.contains('-') => Err(format!("a DNAT port range ({addr}:{port})")),
        Some((addr, port)) => Ok(format!("{addr} port {port}")),
        None => Ok(v.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Imported {
        import(&[("t.rules".into(), text.into())], Dialect::Iptables).unwrap()
    }

    #[test]
    fn rules_jumps_and_policies_translate_with_their_lines() {
        let imp = one("*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:web - [0:0]\n\
             -A INPUT -i lo -j ACCEPT\n\
             -A INPUT -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n\
             -A INPUT -p tcp -j web\n\
             -A INPUT -p udp -m multiport --dports 53,5353:5354 -j ACCEPT\n\
             -A INPUT -s 192.0.2.0/24 -p tcp --dport 113 -j REJECT --reject-with tcp-reset\n\
             -A INPUT -m addrtype ! --dst-type LOCAL -j DROP\n\
             -A INPUT -m addrtype --src-type LOCAL -j DROP\n\
             -A web -m tcp --dport 80 -j ACCEPT\n-A web -j RETURN\nCOMMIT\n");
        let rules: Vec<&str> = imp.rules.iter().map(|l| l.statement.as_str()).collect();
        assert_eq!(
            rules,
            vec![
                "pass in on lo ipv4",
                "pass in ipv4 state { related, established }",
                "pass in ipv4 proto tcp to any port 80",
                "pass in ipv4 proto udp to any port { 53, 5353-5354 }",
                "reject in ipv4 proto tcp from 192.0.2.0/24 to any port 113 with tcp reset",
                "block in ipv4 to !self",
            ]
        );
        assert!(imp.rules[2].origin.starts_with("t.rules:13: -A web -m tcp --dport 80 -j ACCEPT via t.rules:8"));
        assert_eq!(imp.untranslated.len(), 1);
        assert_eq!(imp.untranslated[0].at, "t.rules:12");
        assert!(imp.untranslated[0].reason.contains("-m addrtype --src-type"), "{:?}", imp.untranslated);
        let policy = imp.policy();
        assert!(policy.contains("policy input block"), "{policy}");
        crate::ir::compile("imported.pf", &policy).unwrap_or_else(|e| panic!("{policy}\n{e:?}"));
    }

    /// Docker's published port: the jump on `--dst-type LOCAL` is `to self`,
    /// the interface RETURN narrows the rest of the DOCKER chain; `to self`
    /// beside a destination address is reported.
    #[test]
    fn dockers_nat_chain_is_inlined_under_to_self() {
        let imp = one("*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:DOCKER - [0:0]\n\
             -A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER\n\
             -A PREROUTING -d 192.0.2.1 -m addrtype --dst-type LOCAL -p tcp --dport 81 -j DNAT --to-destination 10.0.0.2\n\
             -A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER\n\
             -A DOCKER -i docker0 -j RETURN\n\
             -A DOCKER -p tcp --dport 8080 -j DNAT --to-destination 172.17.0.2:80\n\
             -A DOCKER -i docker0 -p tcp --dport 8081 -j DNAT --to-destination 172.17.0.2:81\nCOMMIT\n");
        let rules: Vec<&str> = imp.rules.iter().map(|l| l.statement.as_str()).collect();
        assert_eq!(rules, ["dnat in on !docker0 ipv4 proto tcp to self port 8080 -> 172.17.0.2 port 80"]);
        let reasons: Vec<(&str, &str)> = imp.untranslated.iter().map(|u| (u.at.as_str(), u.reason.as_str())).collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(reasons[0].0 == "t.rules:6" && reasons[0].1.contains("`to self` takes the place"), "{reasons:?}");
        assert!(reasons[1].0 == "t.rules:7" && reasons[1].1.contains("nat chain OUTPUT"), "{reasons:?}");
        assert!(reasons[2].0 == "t.rules:10" && reasons[2].1.contains("never matches"), "{reasons:?}");
        crate::ir::compile("imported.pf", &imp.policy()).unwrap_or_else(|e| panic!("{e:?}"));
    }

    #[test]
    fn bad_input_is_an_error_at_its_line() {
        let e =
            import(&[("cut.rules".into(), "*filter\n:INPUT ACCEPT [0:0]\n".into())], Dialect::Iptables).unwrap_err();
        assert_eq!(e.at, "cut.rules:2");
        let e = import(&[("empty.rules".into(), String::new())], Dialect::Iptables).unwrap_err();
        assert!(e.message.contains("no table"), "{e}");
    }
}
