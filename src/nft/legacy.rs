//! Legacy iptables (x_tables, not nf_tables) rules, which netlink cannot
//! see: read with `iptables-legacy-save` and `ip6tables-legacy-save` when
//! the kernel has legacy tables loaded. Never loads a module: without
//! `/proc/net/ip_tables_names` there is nothing to read.

use std::process::Command;

use super::iptables_save::{self, SaveFile};
use super::tables::{NFPROTO_IPV4, NFPROTO_IPV6};

/// The legacy tables of each family that has any, with the family.
/// A missing tool or an unreadable dump is a note, not an error.
pub fn saved() -> (Vec<(u8, SaveFile)>, Vec<String>) {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    for (family, names, tool) in [
        (NFPROTO_IPV4, "/proc/net/ip_tables_names", "iptables-legacy-save"),
        (NFPROTO_IPV6, "/proc/net/ip6_tables_names", "ip6tables-legacy-save"),
    ] {
        let loaded = std::fs::read_to_string(names).is_ok_and(|s| !s.trim().is_empty());
        if !loaded {
            continue;
        }
        match Command::new(tool).output() {
            Ok(o) if o.status.success() => match iptables_save::parse(&String::from_utf8_lossy(&o.stdout)) {
                Ok(f) => out.push((family, f)),
                Err(e) => notes.push(format!("{tool}: cannot read its output: {e}")),
            },
            Ok(o) => notes.push(format!("{tool} failed: {}", String::from_utf8_lossy(&o.stderr).trim())),
            Err(e) => {
                notes.push(format!("legacy iptables tables are loaded but {tool} cannot run ({e}); install iptables"))
            }
        }
    }
    (out, notes)
}
