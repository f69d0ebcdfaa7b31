//! The `iptables-save` / `ip6tables-save` format, read lexically: tables,
//! chains with their policies, and each rule's arguments with its line.
//! Shared by the legacy-iptables coexistence check and `phantomc import`.

/// A built-in chain's hook and priority in table `table` (x_tables' fixed
/// priorities: raw -300, mangle -150, dnat -100, filter 0, security 50, snat 100).
pub fn builtin_hook(table: &str, chain: &str) -> Option<(&'static str, i32)> {
    let hook = match chain {
        "PREROUTING" => "prerouting",
        "INPUT" => "input",
        "FORWARD" => "forward",
        "OUTPUT" => "output",
        "POSTROUTING" => "postrouting",
        _ => return None,
    };
    let priority = match (table, hook) {
        ("raw", _) => -300,
        ("mangle", _) => -150,
        ("nat", "prerouting" | "output") => -100,
        ("nat", _) => 100,
        ("filter", _) => 0,
        ("security", _) => 50,
        _ => return None,
    };
    Some((hook, priority))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaveFile {
    pub tables: Vec<SaveTable>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaveTable {
    pub name: String,
    pub line: usize,
    pub chains: Vec<SaveChain>,
    pub rules: Vec<SaveRule>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaveChain {
    pub name: String,
    /// `ACCEPT`, `DROP`; `None` for a user chain.
    pub policy: Option<String>,
    pub line: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SaveRule {
    pub chain: String,
    /// The arguments after `-A CHAIN`, unquoted.
    pub args: Vec<String>,
    pub line: usize,
    /// The line as written.
    pub text: String,
}

impl SaveTable {
    pub fn chain(&self, name: &str) -> Option<&SaveChain> {
        self.chains.iter().find(|c| c.name == name)
    }

    pub fn rules_of<'a>(&'a self, chain: &'a str) -> impl Iterator<Item = &'a SaveRule> + 'a {
        self.rules.iter().filter(move |r| r.chain == chain)
    }
}

impl SaveRule {
    /// The value after option `opt` (`-j`, `--dport`), if given.
    pub fn value(&self, opt: &str) -> Option<&str> {
        self.args.iter().position(|a| a == opt).and_then(|i| self.args.get(i + 1)).map(String::as_str)
    }
}

/// A format error at a line (1-based).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct SaveError {
    pub line: usize,
    pub message: String,
}

fn error(line: usize, message: impl Into<String>) -> SaveError {
    SaveError { line, message: message.into() }
}

/// Parses a whole save file; every table must end with `COMMIT`.
pub fn parse(text: &str) -> Result<SaveFile, SaveError> {
    let mut tables = Vec::new();
    let mut open: Option<SaveTable> = None;
    let mut last = 0;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        last = line;
        let l = raw.trim();
        // `iptables-save -c` puts each rule's counters first: `[12:3456] -A ...`.
        let l = match l.strip_prefix('[').and_then(|r| r.split_once("] ")) {
            Some((counters, rest)) if counters.contains(':') => rest.trim_start(),
            _ => l,
        };
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if let Some(name) = l.strip_prefix('*') {
            if let Some(t) = &open {
                return Err(error(
                    line,
                    format!("table {name} starts before table {} (line {}) has its COMMIT", t.name, t.line),
                ));
            }
            open = Some(SaveTable { name: name.to_string(), line, chains: Vec::new(), rules: Vec::new() });
            continue;
        }
        let Some(table) = open.as_mut() else {
            return Err(error(
                line,
                format!("`{}` outside a table: a save file starts each table with `*NAME`", short(l)),
            ));
        };
        if l == "COMMIT" {
            tables.push(open.take().expect("open"));
        } else if let Some(decl) = l.strip_prefix(':') {
            let mut parts = decl.split_whitespace();
            let name = parts.next().ok_or_else(|| error(line, "a chain declaration without a name"))?;
            let policy = parts
                .next()
                .ok_or_else(|| error(line, format!("chain {name} has no policy (`-` for a user chain)")))?;
            table.chains.push(SaveChain {
                name: name.to_string(),
                policy: (policy != "-").then(|| policy.to_string()),
                line,
            });
        } else if l.starts_with("-A ") || l.starts_with("-I ") {
            let words = split_words(l).map_err(|m| error(line, m))?;
            let chain = words.get(1).ok_or_else(|| error(line, "a rule without a chain"))?.clone();
            if table.chain(&chain).is_none() {
                return Err(error(
                    line,
                    format!("rule for chain {chain}, which table {} does not declare", table.name),
                ));
            }
            table.rules.push(SaveRule { chain, args: words[2..].to_vec(), line, text: l.to_string() });
        } else {
            return Err(error(line, format!("`{}` is not a table, chain, rule or COMMIT line", short(l))));
        }
    }
    if let Some(t) = open {
        return Err(error(
            last.max(1),
            format!("table {} (line {}) has no COMMIT: the file is cut short", t.name, t.line),
        ));
    }
    if tables.is_empty() {
        return Err(error(last.max(1), "no table in the file: an empty or non-iptables-save input"));
    }
    Ok(SaveFile { tables })
}

fn short(l: &str) -> String {
    let s: String = l.chars().take(40).collect();
    if s.len() < l.len() {
        format!("{s}...")
    } else {
        s
    }
}

/// Splits a rule line into words as iptables-save quotes them: double
/// quotes with backslash escapes.
pub fn split_words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            return Ok(words);
        }
        let mut word = String::new();
        let mut quoted = false;
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() && !quoted {
                break;
            }
            chars.next();
            match c {
                '"' => quoted = !quoted,
                '\\' if quoted => word.extend(chars.next()),
                _ => word.push(c),
            }
        }
        if quoted {
            return Err("a quote that is never closed".into());
        }
        words.push(word);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_chains_and_rules_with_their_lines() {
        let f = parse(
            "# Generated by iptables-save\n*filter\n:INPUT DROP [0:0]\n:ufw-user-input - [0:0]\n\
             -A INPUT -j ufw-user-input\n-A ufw-user-input -p tcp --dport 22 -m comment --comment \"ssh \\\"admin\\\"\" -j ACCEPT\nCOMMIT\n",
        )
        .unwrap();
        let t = &f.tables[0];
        assert_eq!((t.name.as_str(), t.line), ("filter", 2));
        assert_eq!(t.chain("INPUT").unwrap().policy.as_deref(), Some("DROP"));
        assert_eq!(t.chain("ufw-user-input").unwrap().policy, None);
        let r = &t.rules[1];
        assert_eq!((r.chain.as_str(), r.line), ("ufw-user-input", 6));
        assert_eq!(r.value("--comment"), Some("ssh \"admin\""));
        assert_eq!(r.value("-j"), Some("ACCEPT"));
        assert_eq!(builtin_hook("nat", "POSTROUTING"), Some(("postrouting", 100)));
    }

    #[test]
    fn cut_or_garbage_input_names_its_line() {
        assert_eq!(parse("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -j DROP\n").unwrap_err().line, 3);
        assert_eq!(parse("hello world\n").unwrap_err().line, 1);
        assert_eq!(parse("*filter\n-A INPUT -j DROP\nCOMMIT\n").unwrap_err().line, 2);
        assert!(parse("").unwrap_err().message.contains("no table"));
        assert_eq!(parse("*filter\n:INPUT ACCEPT\n-A INPUT -m comment --comment \"x\nCOMMIT\n").unwrap_err().line, 3);
    }
}
