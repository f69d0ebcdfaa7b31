//! firewalld.conf (`--firewalld-conf FILE` beside a zone file): the daemon
//! settings that shape the ruleset firewalld loads. `IPv6_rpfilter` and
//! `RFC3964_IPv4` are translated, `DefaultZone` is noted; every other key
//! is listed by line as not translated, with what it would have changed.

use super::{ImportError, Untranslated};

/// The settings the zone import follows; without a file, firewalld's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonConf {
    /// The strict IPv6 reverse-path filter (`IPv6_rpfilter=yes`/`strict`),
    /// with where it was set (`None`: firewalld's default).
    pub ipv6_rpfilter: Setting,
    /// The 6to4 rejects on forward and output (`RFC3964_IPv4=yes`).
    pub rfc3964_ipv4: Setting,
    /// `DefaultZone=NAME` and its `file:line`.
    pub default_zone: Option<(String, String)>,
    pub untranslated: Vec<Untranslated>,
}

/// A yes/no setting and the `file:line: KEY=VALUE` that set it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    pub on: bool,
    pub at: Option<String>,
}

impl Setting {
    /// Where it comes from, for a rule's comment: `firewalld.conf:27:
    /// IPv6_rpfilter=yes`, or `KEY=yes, firewalld.conf's default`.
    pub fn origin(&self, key: &str) -> String {
        self.at.clone().unwrap_or_else(|| format!("{key}={}, firewalld.conf's default", yes_no(self.on)))
    }
}

fn yes_no(on: bool) -> &'static str {
    if on {
        "yes"
    } else {
        "no"
    }
}

impl Default for DaemonConf {
    fn default() -> Self {
        let default = Setting { on: true, at: None };
        DaemonConf {
            ipv6_rpfilter: default.clone(),
            rfc3964_ipv4: default,
            default_zone: None,
            untranslated: Vec::new(),
        }
    }
}

/// Keys that change only how the daemon runs, not what its ruleset decides.
const DAEMON_ONLY: &[(&str, &str)] = &[
    ("CleanupOnExit", "what firewalld does when it stops, not a rule"),
    ("CleanupModulesOnExit", "what firewalld does when it stops, not a rule"),
    ("Lockdown", "who may change firewalld over D-Bus, not a rule"),
    ("IndividualCalls", "how firewalld loads its rules, not a rule"),
    ("FlushAllOnReload", "what a reload of firewalld keeps, not a rule"),
    ("MinimalMark", "the marks of the iptables backend, not a rule here"),
    ("AutomaticHelpers", "conntrack helpers firewalld assigns; phantomc assigns none"),
    (
        "AllowZoneDrifting",
        "which zone a packet of a source-bound zone falls to; the import takes the zone as the default zone",
    ),
];

/// Reads firewalld.conf: `KEY=VALUE` lines, `#` comments and blank lines.
pub fn parse(name: &str, text: &str) -> Result<DaemonConf, ImportError> {
    let mut conf = DaemonConf::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("{name}:{}", i + 1);
        let Some((key, value)) = line.split_once('=') else {
            return Err(ImportError { at, message: format!("`{line}` is not a KEY=VALUE line of firewalld.conf") });
        };
        let (key, value) = (key.trim(), value.trim());
        let origin = format!("{at}: {key}={value}");
        let skip = |reason: String| Untranslated { at: at.clone(), text: format!("{key}={value}"), reason };
        let flag = match value.to_ascii_lowercase().as_str() {
            "yes" | "true" => Some(true),
            "no" | "false" => Some(false),
            _ => None,
        };
        match key {
            "DefaultZone" => conf.default_zone = Some((value.to_string(), origin)),
            "IPv6_rpfilter" => match (flag, value.to_ascii_lowercase().as_str()) {
                (Some(on), _) => conf.ipv6_rpfilter = Setting { on, at: Some(origin) },
                (None, "strict") => conf.ipv6_rpfilter = Setting { on: true, at: Some(origin) },
                (None, "loose" | "loose-forward" | "strict-forward") => {
                    conf.ipv6_rpfilter = Setting { on: false, at: Some(origin) };
                    conf.untranslated.push(skip(format!(
                        "firewalld 2's {value} reverse-path filter: {}; no reverse-path rule is imported",
                        match value {
                            "strict-forward" => "the strict check for forwarded packets only, which phantomc's early chain (before routing) cannot tell from this host's",
                            _ => "only that some route leads back to the source (nft `fib saddr . mark oif missing`), which phantomc cannot express (`from urpf-failed` is the strict check)",
                        }
                    )));
                }
                _ => {
                    conf.untranslated.push(skip(
                        "not yes, no, strict, loose, strict-forward or loose-forward; firewalld falls back to yes, and so does the import".into(),
                    ));
                    conf.ipv6_rpfilter = Setting { on: true, at: None };
                }
            },
            "RFC3964_IPv4" => match flag {
                Some(on) => conf.rfc3964_ipv4 = Setting { on, at: Some(origin) },
                None => conf
                    .untranslated
                    .push(skip("not yes or no; firewalld falls back to yes, and so does the import".into())),
            },
            "LogDenied" if value == "off" => {}
            "LogDenied" => conf.untranslated.push(skip(format!(
                "firewalld logs {value} packets before its drops and rejects; the imported rules do not log"
            ))),
            "FirewallBackend" if value == "nftables" => {}
            "FirewallBackend" => conf.untranslated.push(skip(
                "the iptables backend orders its chains differently; the import follows the nftables backend".into(),
            )),
            _ => match DAEMON_ONLY.iter().find(|(k, _)| *k == key) {
                Some((_, why)) => conf.untranslated.push(skip((*why).to_string())),
                None => conf.untranslated.push(skip("not a key phantomc knows in firewalld.conf".into())),
            },
        }
    }
    Ok(conf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_translated_and_the_rest_listed_by_line() {
        let text = "# c\nDefaultZone=home\nIPv6_rpfilter=no\nRFC3964_IPv4=yes\nLockdown=no\nLogDenied=off\nNftablesFlowtable=off\n";
        let c = parse("f.conf", text).expect("parses");
        assert!(!c.ipv6_rpfilter.on && c.rfc3964_ipv4.on);
        assert_eq!(c.ipv6_rpfilter.origin("IPv6_rpfilter"), "f.conf:3: IPv6_rpfilter=no");
        assert_eq!(c.default_zone, Some(("home".into(), "f.conf:2: DefaultZone=home".into())));
        let at: Vec<&str> = c.untranslated.iter().map(|u| u.at.as_str()).collect();
        assert_eq!(at, ["f.conf:5", "f.conf:7"]);
        let loose = parse("f.conf", "IPv6_rpfilter=loose\n").expect("parses");
        assert!(!loose.ipv6_rpfilter.on);
        assert!(loose.untranslated[0].reason.contains("fib saddr . mark oif missing"), "{:?}", loose.untranslated);
        let err = parse("f.conf", "DefaultZone=public\ngarbage\n").expect_err("not KEY=VALUE");
        assert_eq!(err.at, "f.conf:2");
        assert_eq!(
            DaemonConf::default().rfc3964_ipv4.origin("RFC3964_IPv4"),
            "RFC3964_IPv4=yes, firewalld.conf's default"
        );
    }
}
