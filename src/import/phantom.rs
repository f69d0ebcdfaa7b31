//! `import --from phantom` (and `config --import`): the YAML rules file of
//! the product phantomc replaces:
//!
//! ```yaml
//! phantom:
//!   rules:
//!     - { name: ssh, priority: 10, protocol: tcp, port: 22, action: allow }
//!   threat_feeds:
//!     - { name: spamhaus-drop, enabled: true, update_interval: 3600 }
//! ```
//!
//! Rules run in ascending `priority` (ties in file order), inbound unless
//! `direction: out`; feeds become phantomc feeds (a keyless provider preset
//! by name, or `url`) blocking their sources.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{ImportError, Imported, Line, Untranslated};

#[derive(Deserialize)]
struct File {
    phantom: Option<Phantom>,
}

#[derive(Deserialize)]
struct Phantom {
    #[serde(default)]
    rules: Vec<BTreeMap<String, serde_yaml::Value>>,
    #[serde(default)]
    threat_feeds: Vec<BTreeMap<String, serde_yaml::Value>>,
    #[serde(flatten)]
    other: BTreeMap<String, serde_yaml::Value>,
}

/// Keyless provider presets a feed name can stand for.
const KEYLESS: &[&str] = &["spamhaus-drop", "firehol-level1", "blocklist-de", "et-compromised", "tor-exits"];

fn text(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        serde_yaml::Value::Sequence(items) => {
            let parts: Option<Vec<String>> = items.iter().map(text).collect();
            parts.map(|p| format!("{{ {} }}", p.join(", ")))
        }
        _ => None,
    }
}

/// A list item on one line: `{name: ssh, port: 22}`.
fn inline(item: &BTreeMap<String, serde_yaml::Value>) -> String {
    let fields: Vec<String> =
        item.iter().map(|(k, v)| format!("{k}: {}", text(v).unwrap_or_else(|| "...".into()))).collect();
    format!("{{{}}}", fields.join(", "))
}

/// The line of the `n`-th list item under `key:` (1-based), for comments.
fn item_lines(src: &str, key: &str) -> Vec<usize> {
    let mut out = Vec::new();
    let mut inside: Option<usize> = None;
    for (i, l) in src.lines().enumerate() {
        let indent = l.len() - l.trim_start().len();
        let t = l.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if t.starts_with(&format!("{key}:")) {
            inside = Some(indent);
            continue;
        }
        match inside {
            Some(at) if t.starts_with("- ") && indent >= at => out.push(i + 1),
            Some(at) if indent <= at && !t.starts_with('-') => inside = None,
            _ => {}
        }
    }
    out
}

pub fn import(name: &str, src: &str) -> Result<Imported, ImportError> {
    let file: File = serde_yaml::from_str(src).map_err(|e| ImportError {
        at: format!("{name}:{}", e.location().map_or(1, |l| l.line())),
        message: format!("not a phantom rules file: {e}"),
    })?;
    let p = file.phantom.ok_or_else(|| ImportError {
        at: format!("{name}:1"),
        message: "no top-level `phantom:` key (expected `phantom: { rules: [...], threat_feeds: [...] }`)".into(),
    })?;
    if p.rules.is_empty() && p.threat_feeds.is_empty() {
        return Err(ImportError {
            at: format!("{name}:1"),
            message: "an empty ruleset: no rules and no threat_feeds".into(),
        });
    }
    let mut out = Imported { header: vec![format!("{name}: phantom rules YAML")], ..Imported::default() };
    let at = |line: Option<&usize>| format!("{name}:{}", line.copied().unwrap_or(1));
    for key in p.other.keys() {
        out.untranslated.push(Untranslated {
            at: at(None),
            text: format!("phantom.{key}"),
            reason: "an unknown section".into(),
        });
    }
    let feed_lines = item_lines(src, "threat_feeds");
    for (i, f) in p.threat_feeds.iter().enumerate() {
        let here = at(feed_lines.get(i));
        let show = inline(f);
        let feed_name = f.get("name").and_then(text).unwrap_or_default();
        let skip = |out: &mut Imported, reason: &str| {
            out.untranslated.push(Untranslated { at: here.clone(), text: show.clone(), reason: reason.into() })
        };
        if f.get("enabled").and_then(serde_yaml::Value::as_bool) == Some(false) {
            skip(&mut out, "a disabled feed");
            continue;
        }
        let ident: String =
            feed_name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        let source = match (f.get("url").and_then(text), KEYLESS.contains(&feed_name.as_str())) {
            (Some(url), _) => format!("source \"{url}\""),
            (None, true) => format!("provider {feed_name}"),
            (None, false) => {
                skip(&mut out, "no `url`, and its name is not a keyless provider preset (spamhaus-drop, firehol-level1, blocklist-de, et-compromised, tor-exits)");
                continue;
            }
        };
        let refresh = match f.get("update_interval").map(|v| (v.as_u64(), text(v))) {
            None => String::new(),
            Some((Some(secs), _)) => format!("; refresh {}m", secs.div_ceil(60).max(1)),
            Some((None, Some(t))) => format!("; refresh {t}"),
            Some((None, None)) => {
                skip(&mut out, "update_interval is not a number of seconds or a duration");
                continue;
            }
        };
        out.declarations.push(Line {
            statement: format!("feed {ident} {{ {source}{refresh} }}"),
            origin: format!("{here}: threat feed {feed_name}"),
        });
        out.rules.push(Line {
            statement: format!("block in from <{ident}>"),
            origin: format!("{here}: threat feed {feed_name}"),
        });
    }
    let rule_lines = item_lines(src, "rules");
    let mut rules: Vec<(i64, usize, String, String)> = Vec::new();
    for (i, r) in p.rules.iter().enumerate() {
        let here = at(rule_lines.get(i));
        match rule(r) {
            Ok((priority, statement)) => {
                let label = r.get("name").and_then(text).unwrap_or_default();
                rules.push((priority, i, statement, format!("{here}: {label} (priority {priority})")));
            }
            Err(reason) => out.untranslated.push(Untranslated { at: here, text: inline(r), reason }),
        }
    }
    rules.sort_by_key(|r| (r.0, r.1));
    super::sort_by_line(&mut out.untranslated);
    out.rules.extend(rules.into_iter().map(|(_, _, statement, origin)| Line { statement, origin }));
    out.declarations.extend([
        Line {
            statement: "policy input block".into(),
            origin: "phantom default: inbound traffic no rule allows is dropped".into(),
        },
        Line { statement: "policy output pass".into(), origin: "phantom default".into() },
    ]);
    Ok(out)
}

/// One rule as (priority, policy statement).
fn rule(r: &BTreeMap<String, serde_yaml::Value>) -> Result<(i64, String), String> {
    for key in r.keys() {
        if !matches!(
            key.as_str(),
            "name"
                | "priority"
                | "protocol"
                | "port"
                | "action"
                | "direction"
                | "source"
                | "destination"
                | "description"
                | "enabled"
        ) {
            return Err(format!("key `{key}` has no phantomc translation"));
        }
    }
    if r.get("enabled").and_then(serde_yaml::Value::as_bool) == Some(false) {
        return Err("a disabled rule".into());
    }
    let priority = r.get("priority").map_or(Some(0), serde_yaml::Value::as_i64).ok_or("priority is not a number")?;
    let action = match r.get("action").and_then(text).unwrap_or_default().to_ascii_lowercase().as_str() {
        "allow" | "accept" | "pass" => "pass",
        "deny" | "drop" | "block" => "block",
        "reject" => "reject",
        other => return Err(format!("action `{other}` has no phantomc translation")),
    };
    let dir = match r.get("direction").and_then(text).as_deref() {
        None | Some("in" | "inbound" | "ingress") => "in",
        Some("out" | "outbound" | "egress") => "out",
        Some(other) => return Err(format!("direction `{other}`")),
    };
    let mut w = vec![action.to_string(), dir.to_string()];
    let proto = r.get("protocol").and_then(text).map(|p| p.to_ascii_lowercase());
    match proto.as_deref() {
        None | Some("any" | "all") => {}
        Some(p) => w.push(format!("proto {p}")),
    }
    if let Some(src) = r.get("source").and_then(text) {
        w.push(format!("from {src}"));
    }
    let port = r.get("port").and_then(text);
    if port.is_some() && matches!(proto.as_deref(), None | Some("any" | "all" | "icmp")) {
        return Err("a port without tcp or udp".into());
    }
    match (r.get("destination").and_then(text), port) {
        (Some(d), Some(p)) => w.push(format!("to {d} port {p}")),
        (Some(d), None) => w.push(format!("to {d}")),
        (None, Some(p)) => w.push(format!("to port {p}")),
        (None, None) => {}
    }
    Ok((priority, w.join(" ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_run_by_priority_and_feeds_block() {
        let src = "phantom:\n  rules:\n    - name: web\n      priority: 20\n      protocol: tcp\n      port: 80\n      action: allow\n\
                   \x20   - name: ssh\n      priority: 10\n      protocol: tcp\n      port: 22\n      action: allow\n\
                   \x20   - name: weird\n      action: quarantine\n\
                   \x20 threat_feeds:\n    - name: spamhaus-drop\n      enabled: true\n      update_interval: 3600\n";
        let imp = import("p.yaml", src).unwrap();
        let rules: Vec<&str> = imp.rules.iter().map(|l| l.statement.as_str()).collect();
        assert_eq!(
            rules,
            vec!["block in from <spamhaus-drop>", "pass in proto tcp to port 22", "pass in proto tcp to port 80"]
        );
        assert_eq!(imp.untranslated[0].at, "p.yaml:13");
        assert!(imp.rules[1].origin.starts_with("p.yaml:8: ssh"), "{}", imp.rules[1].origin);
        assert_eq!(imp.declarations[0].statement, "feed spamhaus-drop { provider spamhaus-drop; refresh 60m }");
        crate::ir::compile("p.pf", &imp.policy()).unwrap_or_else(|e| panic!("{}\n{e:?}", imp.policy()));
        assert!(import("e.yaml", "phantom:\n  rules: []\n").unwrap_err().message.contains("empty"));
        assert!(import("g.yaml", "phantom: [\n").unwrap_err().at.starts_with("g.yaml:"));
    }
}
