//! `import --from nft`: an nftables ruleset as `nft -j list ruleset` prints
//! it (the live one, or a file loaded into a throwaway namespace first). One
//! table's filter base chains on input, forward and output become the hooks,
//! with their policies; jumps are inlined; each rule names its table, chain
//! and handle. Anything else is listed with its place.

use std::collections::BTreeMap;

use serde_json::Value;

use super::iptables::{dir, Cond};
use super::{sort_by_line, ImportError, Imported, Line, Untranslated};
use crate::ir::Ifaces;

/// Imports table `table` (or the only table with filter base chains) of
/// the ruleset `json`; `source` names it in comments. `script`, the text
/// nft loaded when it was a file, gives rules and chains their lines.
pub fn import(source: &str, json: &str, table: Option<&str>, script: Option<&str>) -> Result<Imported, ImportError> {
    let err = |message: String| ImportError { at: source.to_string(), message };
    let doc: Value = serde_json::from_str(json).map_err(|e| err(format!("not nft JSON: {e}")))?;
    let objects = doc.get("nftables").and_then(Value::as_array).ok_or_else(|| err("no `nftables` array".into()))?;
    let base_tables: Vec<(String, String)> = objects_of(objects, "chain")
        .filter(|c| c.get("type").and_then(Value::as_str) == Some("filter") && c.get("hook").is_some())
        .filter_map(|c| Some((c["family"].as_str()?.to_string(), c["table"].as_str()?.to_string())))
        .fold(Vec::new(), |mut v, t| {
            if !v.contains(&t) {
                v.push(t);
            }
            v
        });
    let (family, name) = match table {
        Some(t) => base_tables
            .iter()
            .find(|(_, n)| n == t)
            .cloned()
            .ok_or_else(|| err(format!("no table {t} with filter base chains")))?,
        None => match base_tables.as_slice() {
            [one] => one.clone(),
            [] => return Err(err("an empty ruleset: no table with filter base chains".into())),
            many => {
                return Err(err(format!(
                    "several tables with filter base chains ({}): each sees every packet; import one with --table",
                    many.iter().map(|(f, n)| format!("{f} {n}")).collect::<Vec<_>>().join(", ")
                )))
            }
        },
    };
    let in_table =
        |o: &&Value| o["family"].as_str() == Some(family.as_str()) && o["table"].as_str() == Some(name.as_str());
    let sets: BTreeMap<String, &Value> = objects_of(objects, "set")
        .filter(in_table)
        .filter_map(|s| Some((s["name"].as_str()?.to_string(), s)))
        .collect();
    let mut rules: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for r in objects_of(objects, "rule").filter(in_table) {
        rules.entry(r["chain"].as_str().unwrap_or_default().to_string()).or_default().push(r);
    }
    let fam = match family.as_str() {
        "ip" => Some("ipv4"),
        "ip6" => Some("ipv6"),
        "inet" => None,
        other => return Err(err(format!("table family {other} has no phantomc translation"))),
    };
    let lines = script.map(|t| script_lines(t, &family, &name, &rules)).unwrap_or_default();
    let mut imp = Importer {
        source,
        lines,
        label: format!("{family} {name}"),
        rules: &rules,
        sets: &sets,
        out: Imported::default(),
        used_sets: Vec::new(),
    };
    imp.out.header.push(format!("{source}: nft table {family} {name}"));
    for c in objects_of(objects, "chain").filter(in_table) {
        let Some(hook_name) = c["hook"].as_str() else { continue };
        let kind = c["type"].as_str().unwrap_or_default();
        let hook: &'static str = match (kind, hook_name) {
            ("filter", "input") => "input",
            ("filter", "forward") => "forward",
            ("filter", "output") => "output",
            // A base chain that can only accept changes no packet's fate
            // (firewalld's empty nat and mangle chains): nothing is lost.
            _ if c["policy"].as_str() != Some("drop") && imp.does_nothing(c["name"].as_str().unwrap_or(""), 0) => {
                continue
            }
            ("nat", "prerouting") => "prerouting",
            ("nat", "postrouting") => "postrouting",
            (_, other) => {
                imp.out.untranslated.push(Untranslated {
                    at: imp.chain_at(c["name"].as_str().unwrap_or("")),
                    text: format!("type {kind} hook {other}"),
                    reason: "phantomc imports filter chains on input, forward and output, and nat chains on prerouting and postrouting".into(),
                });
                continue;
            }
        };
        let policy = if c["policy"].as_str() == Some("drop") { "block" } else { "pass" };
        let chain = c["name"].as_str().unwrap_or_default();
        if kind == "nat" {
            imp.chain(chain, hook, &Cond { family: fam, ..Cond::default() }, 0);
            continue;
        }
        imp.out.declarations.push(Line {
            statement: format!("policy {hook} {policy}"),
            origin: format!("{source}: {} chain {chain} (priority {})", imp.label, c["prio"]),
        });
        let base = Cond { family: fam, ..Cond::default() };
        imp.chain(chain, hook, &base, 0);
    }
    // A hook without a base chain accepts everything; phantomc's built-in
    // defaults for input and forward block.
    for hook in ["input", "forward", "output"] {
        if !imp.out.declarations.iter().any(|l| l.statement.starts_with(&format!("policy {hook} "))) {
            imp.out.declarations.push(Line {
                statement: format!("policy {hook} pass"),
                origin: format!("{source}: {} has no base chain on {hook}: the kernel accepts", imp.label),
            });
        }
    }
    for set in std::mem::take(&mut imp.used_sets) {
        let elems = sets.get(&set).and_then(|s| s.get("elem")).and_then(Value::as_array);
        let list: Option<Vec<String>> =
            elems.map(|e| e.iter().map(addr).collect::<Option<Vec<_>>>()).unwrap_or(Some(Vec::new()));
        match list {
            Some(list) => imp.out.declarations.insert(
                0,
                Line {
                    statement: format!("set {set} = {{ {} }}", list.join(", ")),
                    origin: format!("{source}: {} set {set}", imp.label),
                },
            ),
            None => imp.out.untranslated.push(Untranslated {
                at: format!("{source}: {} set {set}", imp.label),
                text: format!("set {set}"),
                reason: "elements that are not addresses or networks".into(),
            }),
        }
    }
    if imp.out.rules.is_empty() && imp.out.declarations.is_empty() {
        return Err(err(format!("an empty ruleset: table {family} {name} has no rule")));
    }
    sort_by_line(&mut imp.out.untranslated);
    Ok(imp.out)
}

struct Importer<'a> {
    source: &'a str,
    /// Per chain: the script line of the chain and of each of its rules.
    lines: BTreeMap<String, (usize, Vec<usize>)>,
    label: String,
    rules: &'a BTreeMap<String, Vec<&'a Value>>,
    sets: &'a BTreeMap<String, &'a Value>,
    out: Imported,
    used_sets: Vec<String>,
}

/// What a rule ends in.
enum End {
    Verdict(&'static str, Option<String>),
    Jump(String),
    Goto(String),
    Return,
    /// `dnat 192.0.2.7 port 80`, `snat 203.0.113.7`, `masquerade`.
    Nat(String),
}

impl Importer<'_> {
    fn at(&self, chain: &str, index: usize) -> String {
        match self.lines.get(chain).and_then(|(_, rules)| rules.get(index)) {
            Some(line) => format!("{}:{line}: {} chain {chain} rule {}", self.source, self.label, index + 1),
            None => format!("{}: {} chain {chain} rule {}", self.source, self.label, index + 1),
        }
    }

    fn chain_at(&self, chain: &str) -> String {
        match self.lines.get(chain) {
            Some((line, _)) => format!("{}:{line}: {} chain {chain}", self.source, self.label),
            None => format!("{}: {} chain {chain}", self.source, self.label),
        }
    }

    fn chain(&mut self, chain: &str, hook: &'static str, prefix: &Cond, depth: usize) {
        let mut prefix = prefix.clone();
        let rules: Vec<&Value> = self.rules.get(chain).cloned().unwrap_or_default();
        for (i, r) in rules.iter().enumerate() {
            let at = self.at(chain, i);
            let text = format!("handle {}", r["handle"]);
            let skip = |out: &mut Imported, reason: String| {
                out.untranslated.push(Untranslated { at: at.clone(), text: text.clone(), reason })
            };
            let (cond, log, end) = match self.rule(r) {
                Ok(x) => x,
                Err(reason) => {
                    skip(&mut self.out, reason);
                    continue;
                }
            };
            let Some(all) = prefix.and(&cond) else {
                skip(&mut self.out, "reached through a jump with a match on the same field".into());
                continue;
            };
            match end {
                End::Verdict(..) if matches!(hook, "prerouting" | "postrouting") => {
                    skip(&mut self.out, "a verdict in a nat chain: phantomc's NAT rules only translate".into())
                }
                End::Verdict(action, with) => {
                    let mut s = format!("{action} {} {}", dir(hook), all.options(hook)).trim_end().to_string();
                    if let Some(prefix) = log {
                        s.push_str(&format!(" log \"{}\"", prefix.replace('"', "'").trim()));
                    }
                    if let Some(w) = with {
                        s.push_str(&format!(" with {w}"));
                    }
                    self.out.rules.push(Line { statement: s.trim_end().to_string(), origin: format!("{at} ({text})") });
                }
                End::Jump(_) | End::Goto(_) if depth >= 16 => {
                    skip(&mut self.out, "jumps nest deeper than 16 chains".into())
                }
                End::Jump(to) => self.chain(&to, hook, &all, depth + 1),
                // A goto never comes back: after an unconditional one the
                // chain ends; a conditional one is a jump when its chain
                // always decides (firewalld's zone chains end in the target).
                End::Goto(to) if cond.is_unconditional() => return self.chain(&to, hook, &all, depth + 1),
                End::Goto(to) if self.always_decides(&to) => self.chain(&to, hook, &all, depth + 1),
                End::Goto(_) => skip(
                    &mut self.out,
                    "a conditional goto into a chain that can end without a verdict: phantomc rules cannot skip \
                     the rest of the chain"
                        .into(),
                ),
                End::Return if cond.is_unconditional() => return,
                // `iifname "docker0" return` in a NAT chain: the rest is for the other interfaces.
                End::Return if super::iptables::is_nat(hook) && cond.interface_only() => {
                    match prefix.after_return(&cond) {
                        Some(narrowed) => prefix = narrowed,
                        None => return,
                    }
                }
                End::Return => skip(&mut self.out, "a conditional return".into()),
                End::Nat(n) => match super::iptables::statement(hook, &all, &super::iptables::Target::Nat(n)) {
                    Ok(s) => self.out.rules.push(Line { statement: s, origin: format!("{at} ({text})") }),
                    Err(reason) => skip(&mut self.out, reason),
                },
            }
        }
    }

    /// Whether every packet entering `chain` gets a verdict there: its last
    /// rule is an unconditional accept, drop or reject.
    fn always_decides(&mut self, chain: &str) -> bool {
        let last = self.rules.get(chain).and_then(|r| r.last()).copied();
        last.is_some_and(
            |r| matches!(self.rule(r), Ok((c, None, End::Verdict(..))) if c.is_unconditional() && c.limit.is_none()),
        )
    }

    /// Whether `chain`, and every chain it jumps or goes to, only matches,
    /// counts, accepts and returns: run from a base chain whose policy
    /// accepts, it changes no packet's fate.
    fn does_nothing(&self, chain: &str, depth: usize) -> bool {
        depth < 16
            && self.rules.get(chain).into_iter().flatten().all(|r| {
                r["expr"].as_array().into_iter().flatten().all(|e| {
                    let Some((kind, v)) = e.as_object().and_then(|o| o.iter().next()) else { return false };
                    match kind.as_str() {
                        "match" | "counter" | "accept" | "return" => true,
                        "jump" | "goto" => self.does_nothing(v["target"].as_str().unwrap_or_default(), depth + 1),
                        _ => false,
                    }
                })
            })
    }

    /// One rule's matches, log prefix and end; `Err` names what has no translation.
    fn rule(&mut self, r: &Value) -> Result<(Cond, Option<String>, End), String> {
        let mut c = Cond::default();
        let mut log = None;
        let exprs = r["expr"].as_array().ok_or("a rule without expressions")?;
        for e in exprs {
            let (kind, v) = e.as_object().and_then(|o| o.iter().next()).ok_or("an empty expression")?;
            match kind.as_str() {
                "match" => self.matches(&mut c, v)?,
                "counter" => {}
                "log" => log = Some(v.get("prefix").and_then(Value::as_str).unwrap_or("").to_string()),
                "limit" => {
                    if v.get("inv").and_then(Value::as_bool) == Some(true)
                        || v.get("rate_unit").is_some_and(|u| u != "packets")
                    {
                        return Err("a byte or inverted limit".into());
                    }
                    let burst = v.get("burst").and_then(Value::as_u64).filter(|b| *b != 5);
                    let mut l = format!("limit {}/{}", v["rate"], v["per"].as_str().unwrap_or("second"));
                    if let Some(b) = burst {
                        l.push_str(&format!(" burst {b}"));
                    }
                    c.limit = Some(l);
                }
                "accept" => return Ok((c, log, End::Verdict("pass", None))),
                "drop" => return Ok((c, log, End::Verdict("block", None))),
                "reject" => {
                    let with = match (v.get("type").and_then(Value::as_str), v.get("expr").and_then(Value::as_str)) {
                        (None, _) => None,
                        (Some("tcp reset"), _) => Some("tcp reset".to_string()),
                        (Some(kind), Some(code)) => Some(format!("{kind} {code}")),
                        (Some(kind), None) => return Err(format!("reject with {kind} and no code")),
                    };
                    return Ok((c, log, End::Verdict("reject", with)));
                }
                "jump" => return Ok((c, log, End::Jump(v["target"].as_str().unwrap_or_default().into()))),
                "goto" => return Ok((c, log, End::Goto(v["target"].as_str().unwrap_or_default().into()))),
                "return" => return Ok((c, log, End::Return)),
                "masquerade" if v.as_object().is_none_or(|o| o.is_empty()) => {
                    return Ok((c, log, End::Nat("masquerade".into())))
                }
                "snat" | "dnat" => {
                    let target = addr(&v["addr"]).filter(|a| !a.contains('/'));
                    let target = target
                        .ok_or_else(|| format!("a {kind} to {}: phantomc translates to one address", v["addr"]))?;
                    if v.get("flags").is_some() || v.get("type_flags").is_some() {
                        return Err(format!("{kind} flags"));
                    }
                    let port = match v.get("port") {
                        None => String::new(),
                        Some(p) if kind == "dnat" => format!(" port {}", p.as_u64().ok_or("a dnat port range")?),
                        Some(_) => return Err("an snat port".into()),
                    };
                    return Ok((c, log, End::Nat(format!("{kind} {target}{port}"))));
                }
                other => return Err(format!("the `{other}` statement has no phantomc translation")),
            }
        }
        Err("a rule without a verdict".into())
    }

    fn matches(&mut self, c: &mut Cond, m: &Value) -> Result<(), String> {
        let op = m["op"].as_str().unwrap_or("==");
        let negated = match op {
            "==" | "in" => false,
            "!=" => true,
            other => return Err(format!("comparison `{other}`")),
        };
        let left = &m["left"];
        let right = &m["right"];
        let no_neg = |what: &str| if negated { Err(format!("a negated {what}")) } else { Ok(()) };
        if let Some(p) = left.get("payload") {
            let (proto, field) = (p["protocol"].as_str().unwrap_or(""), p["field"].as_str().unwrap_or(""));
            match (proto, field) {
                ("ip" | "ip6", "saddr" | "daddr") => {
                    let hosts = self.hosts(right)?;
                    let side = Some((negated, hosts));
                    if field == "saddr" {
                        c.src = side;
                    } else {
                        c.dst = side;
                    }
                    c.family = c.family.or(Some(if proto == "ip" { "ipv4" } else { "ipv6" }));
                }
                ("tcp" | "udp" | "th", "sport" | "dport") => {
                    if proto != "th" {
                        c.proto = Some(proto.into());
                    }
                    let ports = Some((negated, values(right, &|v| v.as_u64().map(|n| n.to_string()))?));
                    if field == "sport" {
                        c.sport = ports;
                    } else {
                        c.dport = ports;
                    }
                }
                ("icmp" | "icmpv6", "type") => {
                    no_neg("ICMP type")?;
                    c.proto = Some(proto.into());
                    c.icmp_type =
                        Some(values(right, &|v| v.as_str().map(String::from).or(v.as_u64().map(|n| n.to_string())))?);
                }
                ("ip", "protocol") | ("ip6", "nexthdr") => {
                    no_neg("protocol")?;
                    c.proto = Some(values(right, &|v| v.as_str().map(String::from))?);
                }
                _ => return Err(format!("a match on {proto} {field}")),
            }
            return Ok(());
        }
        if let Some(key) = left.get("meta").and_then(|m| m["key"].as_str()) {
            if let "iifname" | "oifname" = key {
                let names = match right.get("set").and_then(Value::as_array) {
                    Some(items) => items.iter().map(|v| v.as_str().map(String::from)).collect::<Option<Vec<_>>>(),
                    None => right.as_str().map(|s| vec![s.to_string()]),
                };
                let mut names = names.ok_or_else(|| format!("the interface names {right}"))?;
                names.sort();
                let i = Some(Ifaces { negated, names });
                if key == "iifname" {
                    c.iif = i;
                } else {
                    c.oif = i;
                }
                return Ok(());
            }
            no_neg(&format!("meta {key}"))?;
            match key {
                "l4proto" => c.proto = Some(values(right, &|v| v.as_str().map(String::from))?),
                "nfproto" => {
                    c.family = match right.as_str() {
                        Some("ipv4") => Some("ipv4"),
                        Some("ipv6") => Some("ipv6"),
                        _ => return Err("meta nfproto other than ipv4 or ipv6".into()),
                    }
                }
                other => return Err(format!("a match on meta {other}")),
            }
            return Ok(());
        }
        // `fib daddr type local`: `to self`.
        if let Some(fib) = left.get("fib") {
            let daddr_only = fib["flags"].as_array().is_some_and(|f| f.len() == 1 && f[0] == "daddr");
            if fib["result"] == "type" && daddr_only && right == "local" {
                c.local = Some(!negated);
                return Ok(());
            }
            return Err(format!("a match on {left} {op} {right}"));
        }
        if left.get("ct").and_then(|c| c["key"].as_str()) == Some("state") {
            no_neg("connection state")?;
            c.state = Some(values(right, &|v| v.as_str().map(String::from))?);
            return Ok(());
        }
        Err(format!("a match on {left}"))
    }

    /// Addresses, networks, an anonymous set of them, or a named set.
    fn hosts(&mut self, v: &Value) -> Result<String, String> {
        if let Some(name) = v.as_str().and_then(|s| s.strip_prefix('@')) {
            if !self.sets.contains_key(name) {
                return Err(format!("set @{name} is not in the ruleset"));
            }
            if !self.used_sets.iter().any(|s| s == name) {
                self.used_sets.push(name.to_string());
            }
            return Ok(format!("<{name}>"));
        }
        values(v, &addr)
    }
}

/// The lines of table `family name`'s chains and rules in an nft script
/// written one rule a line (as `nft list ruleset` prints it): per chain,
/// its line and its rules' lines, kept only where the script's rule lines
/// are as many as the rules nft loaded (else the chain's rules keep their
/// place by number only).
fn script_lines(
    text: &str,
    family: &str,
    name: &str,
    loaded: &BTreeMap<String, Vec<&Value>>,
) -> BTreeMap<String, (usize, Vec<usize>)> {
    let mut out = BTreeMap::new();
    let mut in_table = false;
    // The chain being read: its name, line and rule lines.
    let mut chain: Option<(String, usize, Vec<usize>)> = None;
    let mut depth = 0usize;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or_default().trim();
        let words: Vec<&str> = line.split_whitespace().collect();
        let opens = line.matches('{').count();
        let closes = line.matches('}').count();
        match (depth, words.as_slice()) {
            (0, ["table", f, n, "{"]) => in_table = *f == family && *n == name,
            (0, ["table", n, "{"]) => in_table = family == "ip" && *n == name,
            (1, ["chain", c, "{", ..]) if in_table => chain = Some((c.to_string(), i + 1, Vec::new())),
            (2, _) if chain.is_some() && opens == closes && !line.is_empty() => {
                let setting = ["type", "policy", "comment", "devices"].iter().any(|k| words.first() == Some(k));
                if !setting {
                    chain.as_mut().expect("checked").2.push(i + 1);
                }
            }
            _ => {}
        }
        depth = (depth + opens).saturating_sub(closes);
        if depth < 2 {
            if let Some((c, at, rules)) = chain.take() {
                let rules = if loaded.get(&c).map_or(0, Vec::len) == rules.len() { rules } else { Vec::new() };
                out.insert(c, (at, rules));
            }
        }
    }
    out
}

/// The objects of one kind (`chain`, `rule`, `set`) in `nft -j` output.
fn objects_of<'a>(objects: &'a [Value], kind: &'static str) -> impl Iterator<Item = &'a Value> + 'a {
    objects.iter().filter_map(move |o| o.get(kind))
}

/// One value, or `{ a, b }` for an anonymous set, via `one`; ranges as `a-b`.
fn values(v: &Value, one: &dyn Fn(&Value) -> Option<String>) -> Result<String, String> {
    let item = |x: &Value| -> Option<String> {
        match x.get("range").and_then(Value::as_array) {
            Some(r) if r.len() == 2 => Some(format!("{}-{}", one(&r[0])?, one(&r[1])?)),
            _ => one(x),
        }
    };
    let list = match v.get("set").and_then(Value::as_array).or(v.as_array()) {
        Some(items) => items.iter().map(item).collect::<Option<Vec<_>>>(),
        None => return item(v).ok_or_else(|| format!("the value {v}")),
    };
    let list = list.ok_or_else(|| format!("the values {v}"))?;
    Ok(if list.len() == 1 { list[0].clone() } else { format!("{{ {} }}", list.join(", ")) })
}

/// An address or a network (`{"prefix": {"addr", "len"}}`).
fn addr(v: &Value) -> Option<String> {
    if let Some(s) = v.as_str() {
        return Some(s.to_string());
    }
    let p = v.get("prefix")?;
    Some(format!("{}/{}", p["addr"].as_str()?, p["len"]))
}
