//! `explain --live`: one packet through every base chain of every table on
//! its hook path, as the kernel walks them: hooks in path order, chains in
//! priority order; an accept ends one base chain, a drop or reject ends the
//! packet. phantomc's own chain is decided by the IR ([`crate::ir::eval`]);
//! other tables' rules run on a small model of the nf_tables register machine
//! over the packet's real header bytes. An expression it cannot evaluate
//! (an iptables match, a rate limit, a fib lookup) is named, never guessed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use serde::Serialize;

use super::coexist;
use super::explain::{self, Explanation};
use crate::diag::SourceMap;
use crate::ir::eval::{Packet, SetContents};
use crate::ir::{names, Action, Hook, Ruleset};
use crate::nft::tables::{self, Chain, Expr, SetKeys, Verdict, NFPROTO_IPV4, NFPROTO_IPV6};

/// What one base chain did with the packet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Accept,
    Drop,
    Reject,
    /// It met an expression it cannot evaluate.
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LiveStep {
    pub hook: &'static str,
    pub priority: i32,
    pub family: &'static str,
    pub table: String,
    pub chain: String,
    pub owner: &'static str,
    pub outcome: Outcome,
    /// The deciding rule (or the chain policy), or why it cannot say.
    pub by: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LiveExplanation {
    pub packet: String,
    pub path: Vec<&'static str>,
    pub steps: Vec<LiveStep>,
    /// pass, block, reject, or unknown when an unevaluable expression could decide.
    pub verdict: &'static str,
    /// The step that decided (index into `steps`).
    pub decided_by: Option<usize>,
    /// phantomc's table alone, as `explain` gives it.
    pub phantomc: Explanation,
}

/// The hooks a packet of `hook` passes, in order.
pub fn path(hook: Hook) -> Vec<&'static str> {
    match hook {
        Hook::Input => vec!["ingress", "prerouting", "input"],
        Hook::Forward => vec!["ingress", "prerouting", "forward", "postrouting"],
        Hook::Output => vec!["output", "postrouting"],
    }
}

/// Looks a key up in a named set of a foreign table.
pub type SetReader<'a> = dyn FnMut(u8, &str, &str) -> Option<SetKeys> + 'a;

/// Walks `p` through phantomc's policy `rs` (with run-time set `contents`)
/// and every other base chain of `kernel`.
pub fn explain_live(
    rs: &Ruleset,
    sources: &SourceMap,
    p: &Packet,
    contents: &SetContents,
    kernel: &[Chain],
    sets: &mut SetReader,
) -> LiveExplanation {
    let hooks = path(p.hook);
    let ours = explain::explain_with(rs, sources, p, contents);
    let layout = coexist::arrange(rs, kernel, &[], Vec::new());
    let v6 = matches!(p.src, IpAddr::V6(_));
    let mut steps = Vec::new();
    for hc in layout.chains.iter().filter(|h| hooks.contains(&h.hook)) {
        let (outcome, by) = if hc.is_phantomc() {
            if hc.hook != p.hook.name() {
                continue;
            }
            let outcome = match ours.verdict {
                Action::Pass => Outcome::Accept,
                Action::Block => Outcome::Drop,
                Action::Reject => Outcome::Reject,
            };
            (outcome, format!("{}  `{}`", ours.decided_by.rule, ours.decided_by.text))
        } else {
            let named =
                |c: &&Chain| tables::family_name(c.family) == hc.family && c.table == hc.table && c.name == hc.chain;
            let Some(chain) = kernel.iter().find(named) else {
                continue;
            };
            let family_ok = match chain.family {
                NFPROTO_IPV4 => !v6,
                NFPROTO_IPV6 => v6,
                _ => true,
            };
            if !family_ok {
                continue;
            }
            let table: Vec<&Chain> = kernel.iter().filter(|c| c.is_in(chain.family, &chain.table)).collect();
            let mut machine =
                Machine { packet: p, headers: Headers::of(p), table: &table, sets, depth: 0, decided: None };
            machine.base_chain(chain)
        };
        let ends = matches!(outcome, Outcome::Drop | Outcome::Reject);
        steps.push(LiveStep {
            hook: hc.hook,
            priority: hc.priority,
            family: hc.family,
            table: hc.table.clone(),
            chain: hc.chain.clone(),
            owner: hc.owner,
            outcome,
            by,
        });
        if ends {
            // A dropped packet meets no later chain.
            break;
        }
    }
    // The first drop or reject decides; before it, an unevaluable chain
    // leaves the verdict unknown (a drop after one is still a drop).
    let last = steps.last().filter(|s| matches!(s.outcome, Outcome::Drop | Outcome::Reject));
    let unknown = steps.iter().position(|s| s.outcome == Outcome::Unknown);
    let (verdict, decided_by) = match (last, unknown) {
        (Some(s), _) => (if s.outcome == Outcome::Drop { "block" } else { "reject" }, Some(steps.len() - 1)),
        (None, Some(i)) => ("unknown", Some(i)),
        (None, None) => ("pass", None),
    };
    LiveExplanation { packet: ours.packet.clone(), path: hooks, steps, verdict, decided_by, phantomc: ours }
}

/// The outcome of `kernel`'s base chains alone for `p` (the first drop or
/// reject, else accept; unknown when an unevaluable chain comes first),
/// with the deciding chain and rule.
pub fn kernel_verdict(p: &Packet, kernel: &[Chain], sets: &mut SetReader) -> KernelVerdict {
    let hooks = path(p.hook);
    let v6 = matches!(p.src, IpAddr::V6(_));
    let mut on_path: Vec<(usize, i32, &Chain)> = kernel
        .iter()
        .filter_map(|c| {
            let b = c.base.as_ref()?;
            let rank = hooks.iter().position(|h| *h == b.hook)?;
            let family_ok = match c.family {
                NFPROTO_IPV4 => !v6,
                NFPROTO_IPV6 => v6,
                _ => true,
            };
            family_ok.then_some((rank, b.priority, c))
        })
        .collect();
    on_path.sort_by_key(|(rank, priority, _)| (*rank, *priority));
    let mut first_unknown = None;
    let mut accepted_by = Vec::new();
    let mut accepted_text = Vec::new();
    for (_, _, chain) in on_path {
        let table: Vec<&Chain> = kernel.iter().filter(|c| c.is_in(chain.family, &chain.table)).collect();
        let mut machine = Machine { packet: p, headers: Headers::of(p), table: &table, sets, depth: 0, decided: None };
        let (outcome, by) = machine.base_chain(chain);
        let rule = machine.decided.take().map(|(c, i)| (chain.table.clone(), c, i));
        let verdict = KernelVerdict {
            outcome,
            by: format!("{} {} {}", tables::family_name(chain.family), chain.table, by),
            rules: rule.clone().into_iter().collect(),
        };
        match verdict.outcome {
            Outcome::Accept => {
                accepted_by.extend(rule);
                accepted_text.push(verdict.by);
            }
            Outcome::Unknown => {
                first_unknown.get_or_insert(verdict);
            }
            Outcome::Drop | Outcome::Reject => {
                // An earlier rule that could not be evaluated may have dropped it first.
                let mut verdict = verdict;
                if let Some(unknown) = first_unknown {
                    verdict.rules.splice(0..0, unknown.rules);
                    verdict.by = format!("{}; if it did not decide, {}", unknown.by, verdict.by);
                }
                return verdict;
            }
        }
    }
    first_unknown.unwrap_or(KernelVerdict {
        outcome: Outcome::Accept,
        by: if accepted_text.is_empty() {
            "no base chain on its path".into()
        } else {
            format!("every chain accepts: {}", accepted_text.join("; "))
        },
        rules: accepted_by,
    })
}

/// What [`kernel_verdict`] found.
#[derive(Clone, Debug)]
pub struct KernelVerdict {
    pub outcome: Outcome,
    /// In words: table, chain, rule.
    pub by: String,
    /// The deciding rule as (table, chain, 0-based index); for an accept,
    /// every chain's accepting rule (chain policies are not listed); when
    /// unknown, the rule that could not be evaluated; for a drop or reject
    /// after such a rule, that rule first, then the deciding one.
    pub rules: Vec<(String, String, usize)>,
}

/// The packet's network and transport headers as the kernel sees them.
struct Headers {
    network: Vec<u8>,
    transport: Vec<u8>,
}

impl Headers {
    fn of(p: &Packet) -> Headers {
        let transport = match p.proto {
            names::TCP => {
                let mut t = vec![0u8; 20];
                t[..2].copy_from_slice(&p.sport.unwrap_or(0).to_be_bytes());
                t[2..4].copy_from_slice(&p.dport.unwrap_or(0).to_be_bytes());
                t[12] = 0x50;
                // A new connection opens with SYN; anything else carries ACK.
                t[13] = if p.ct_state == 8 { 0x02 } else { 0x10 };
                t[14..16].copy_from_slice(&64240u16.to_be_bytes());
                t
            }
            names::ICMP | names::ICMPV6 => {
                let mut t = vec![0u8; 8];
                t[0] = p.icmp_type.unwrap_or(0);
                t
            }
            _ => {
                let mut t = vec![0u8; 8];
                t[..2].copy_from_slice(&p.sport.unwrap_or(0).to_be_bytes());
                t[2..4].copy_from_slice(&p.dport.unwrap_or(0).to_be_bytes());
                t[4..6].copy_from_slice(&8u16.to_be_bytes());
                t
            }
        };
        let network = match (p.src, p.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let mut h = vec![0x45, 0];
                h.extend_from_slice(&u16::try_from(20 + transport.len()).unwrap_or(0).to_be_bytes());
                h.extend_from_slice(&[0, 0, 0x40, 0, 64, p.proto, 0, 0]);
                h.extend_from_slice(&s.octets());
                h.extend_from_slice(&d.octets());
                h
            }
            (s, d) => {
                let to16 = |a: IpAddr| match a {
                    IpAddr::V6(a) => a.octets(),
                    IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
                };
                let mut h = vec![0x60, 0, 0, 0];
                h.extend_from_slice(&u16::try_from(transport.len()).unwrap_or(0).to_be_bytes());
                h.extend_from_slice(&[p.proto, 64]);
                h.extend_from_slice(&to16(s));
                h.extend_from_slice(&to16(d));
                h
            }
        };
        Headers { network, transport }
    }
}

/// How a chain ended.
enum End {
    Verdict(Outcome, String),
    /// Fell off the end or returned: the caller goes on.
    Return,
}

/// The register machine for one packet in one table.
struct Machine<'a, 'b> {
    packet: &'a Packet,
    headers: Headers,
    table: &'a [&'a Chain],
    sets: &'a mut SetReader<'b>,
    depth: usize,
    /// The chain and index (0-based) of the rule that gave the verdict.
    decided: Option<(String, usize)>,
}

/// Byte offset of register `reg` in the register file (NFT_REG_1..4 are
/// 16 bytes wide, NFT_REG32_00.. 4 bytes; both index the same file).
fn reg_offset(reg: u32) -> usize {
    let word = if reg <= 4 { reg * 4 } else { reg.saturating_sub(8) + 4 };
    usize::try_from(word).unwrap_or(0) * 4
}

const REGS: usize = 4 * 20;

impl Machine<'_, '_> {
    fn base_chain(&mut self, chain: &Chain) -> (Outcome, String) {
        match self.chain(chain) {
            // Whatever it could not evaluate, a chain that can reach no drop accepts.
            End::Verdict(Outcome::Unknown, by)
                if !chain.base.as_ref().is_some_and(|b| b.policy_drops)
                    && !coexist::reaches_drop(chain, self.table) =>
            {
                self.decided = None;
                (Outcome::Accept, format!("{by}; but the chain reaches no drop or reject, so it accepts"))
            }
            End::Verdict(o, by) => (o, by),
            End::Return => {
                let drops = chain.base.as_ref().is_some_and(|b| b.policy_drops);
                (if drops { Outcome::Drop } else { Outcome::Accept }, format!("chain {} policy", chain.name))
            }
        }
    }

    fn chain(&mut self, chain: &Chain) -> End {
        self.depth += 1;
        if self.depth > 16 {
            return End::Verdict(
                Outcome::Unknown,
                format!("chain {}: jumps nest deeper than the kernel allows", chain.name),
            );
        }
        let mut end = End::Return;
        for (i, rule) in chain.rules.iter().enumerate() {
            let at = || format!("{} rule {} (handle {}): {}", chain.name, i + 1, rule.handle, describe(&rule.exprs));
            match self.rule(&rule.exprs) {
                Step::NoMatch => {}
                Step::Unknown(why) => {
                    self.decided = Some((chain.name.clone(), i));
                    end = End::Verdict(Outcome::Unknown, format!("{}: cannot evaluate {why}", at()));
                    break;
                }
                Step::Verdict(Outcome::Unknown) => unreachable!("rules end in a verdict, not Unknown"),
                Step::Verdict(o) => {
                    self.decided = Some((chain.name.clone(), i));
                    end = End::Verdict(o, at());
                    break;
                }
                Step::Return => break,
                Step::Jump(to, goto) => {
                    let Some(target) = self.table.iter().find(|c| c.name == to) else {
                        end = End::Verdict(Outcome::Unknown, format!("{}: jump to a missing chain {to}", at()));
                        break;
                    };
                    match self.chain(target) {
                        End::Return if !goto => {}
                        other => {
                            end = other;
                            break;
                        }
                    }
                }
            }
        }
        self.depth -= 1;
        end
    }

    /// Runs one rule's expressions.
    fn rule(&mut self, exprs: &[Expr]) -> Step {
        let mut regs = [0u8; REGS];
        for e in exprs {
            match self.expr(e, &mut regs) {
                Ok(None) => {}
                Ok(Some(step)) => return step,
                Err(why) => return Step::Unknown(why),
            }
        }
        Step::NoMatch
    }

    /// `Ok(None)`: go on; `Ok(Some(step))`: the rule ends here.
    fn expr(&mut self, e: &Expr, regs: &mut [u8; REGS]) -> Result<Option<Step>, String> {
        let p = self.packet;
        let read = |regs: &[u8; REGS], reg: u32, len: usize| -> Result<Vec<u8>, String> {
            let at = reg_offset(reg);
            regs.get(at..at + len).map(<[u8]>::to_vec).ok_or_else(|| format!("register {reg} of {len} bytes"))
        };
        let write = |regs: &mut [u8; REGS], reg: u32, data: &[u8]| -> Result<(), String> {
            let at = reg_offset(reg);
            let words = data.len().div_ceil(4) * 4;
            let dst = regs.get_mut(at..at + words).ok_or_else(|| format!("register {reg}"))?;
            dst.fill(0);
            dst[..data.len()].copy_from_slice(data);
            Ok(())
        };
        match e {
            Expr::Payload { base, offset, len, dreg } => {
                let header = match base {
                    1 => &self.headers.network,
                    2 => &self.headers.transport,
                    _ => return Err("a link-layer or inner header match".into()),
                };
                let (o, l) = (*offset as usize, *len as usize);
                let bytes = header.get(o..o + l).ok_or_else(|| format!("header bytes {o}..{}", o + l))?;
                write(regs, *dreg, bytes)?;
            }
            Expr::Meta { key, dreg: Some(dreg) } => {
                let value = meta(p, *key)?;
                write(regs, *dreg, &value)?;
            }
            Expr::Ct { key, dreg: Some(dreg) } => {
                let value = match key {
                    0 => {
                        let bit = if p.ct_state == 16 { 64u32 } else { u32::from(p.ct_state) };
                        bit.to_ne_bytes().to_vec()
                    }
                    1 => vec![0], // direction: the packet is the original direction
                    2 => match ct_status(p.ct_state) {
                        Some(status) => status.to_ne_bytes().to_vec(),
                        // No connection (invalid, untracked): the kernel's rule does not match.
                        None => return Ok(Some(Step::NoMatch)),
                    },
                    k => return Err(format!("conntrack key {k}")),
                };
                write(regs, *dreg, &value)?;
            }
            Expr::Cmp { sreg, op, data } => {
                let have = read(regs, *sreg, data.len())?;
                let ord = have.as_slice().cmp(data.as_slice());
                let ok = match op {
                    0 => ord.is_eq(),
                    1 => ord.is_ne(),
                    2 => ord.is_lt(),
                    3 => ord.is_le(),
                    4 => ord.is_gt(),
                    5 => ord.is_ge(),
                    _ => return Err(format!("comparison {op}")),
                };
                if !ok {
                    return Ok(Some(Step::NoMatch));
                }
            }
            Expr::Range { sreg, op, from, to } => {
                let have = read(regs, *sreg, from.len())?;
                let inside = from.as_slice() <= have.as_slice() && have.as_slice() <= to.as_slice();
                if inside != (*op == 0) {
                    return Ok(Some(Step::NoMatch));
                }
            }
            Expr::Bitwise { sreg, dreg, len, mask, xor, shift } => {
                if *shift {
                    return Err("a bit shift".into());
                }
                let have = read(regs, *sreg, *len as usize)?;
                let out: Vec<u8> = have
                    .iter()
                    .enumerate()
                    .map(|(i, b)| (b & mask.get(i).copied().unwrap_or(0)) ^ xor.get(i).copied().unwrap_or(0))
                    .collect();
                write(regs, *dreg, &out)?;
            }
            Expr::Lookup { sreg, set, map, inverted } => {
                if *map {
                    return Err(format!("a map lookup in @{set}"));
                }
                let chain = self.table.first().ok_or("a lookup outside a table")?;
                let keys = (self.sets)(chain.family, &chain.table, set).ok_or_else(|| format!("set @{set}"))?;
                let len = match &keys {
                    SetKeys::Exact(k) => k.first().map(Vec::len),
                    SetKeys::Intervals(r) => r.first().map(|(lo, _)| lo.len()),
                    SetKeys::Concatenated => return Err(format!("concatenated interval set @{set}")),
                };
                let found = match len {
                    Some(len) => keys.contains(&read(regs, *sreg, len)?).unwrap_or(false),
                    None => false,
                };
                if found == *inverted {
                    return Ok(Some(Step::NoMatch));
                }
            }
            Expr::Immediate { dreg, data } => write(regs, *dreg, data)?,
            Expr::Verdict(v) => {
                return Ok(Some(match v {
                    Verdict::Accept => Step::Verdict(Outcome::Accept),
                    Verdict::Drop => Step::Verdict(Outcome::Drop),
                    Verdict::Continue => return Ok(None),
                    Verdict::Break => Step::NoMatch,
                    Verdict::Return => Step::Return,
                    Verdict::Jump(c) => Step::Jump(c.clone(), false),
                    Verdict::Goto(c) => Step::Jump(c.clone(), true),
                    Verdict::Queue | Verdict::Other(_) => return Err("a queue verdict".into()),
                }))
            }
            Expr::Reject => return Ok(Some(Step::Verdict(Outcome::Reject))),
            Expr::Xt { target: true, name, .. } => match name.as_str() {
                "REJECT" => return Ok(Some(Step::Verdict(Outcome::Reject))),
                "MASQUERADE" | "SNAT" | "DNAT" | "REDIRECT" => return Ok(Some(Step::Verdict(Outcome::Accept))),
                "LOG" | "NFLOG" | "MARK" | "CONNMARK" | "TCPMSS" | "CHECKSUM" | "CT" | "DSCP" | "TOS" | "CLASSIFY"
                | "AUDIT" | "TRACE" => {}
                other => return Err(format!("iptables target {other}")),
            },
            Expr::Xt { target: false, name, .. } if name == "comment" => {}
            Expr::Xt { target: false, name, rev, info } => {
                if !xt_match(name, *rev, info, p)? {
                    return Ok(Some(Step::NoMatch));
                }
            }
            Expr::Meta { dreg: None, .. } | Expr::Ct { dreg: None, .. } => {}
            Expr::Other(name) => match name.as_str() {
                "counter" | "log" | "notrack" | "nat" | "masq" | "redir" | "dynset" | "objref" | "last" => {}
                "limit" => return Err("a rate limit (it matches only while under its rate)".into()),
                other => return Err(format!("the `{other}` expression")),
            },
        }
        Ok(None)
    }
}

/// iptables matches iptables-nft keeps as x_tables blobs, from their info:
/// `-m state`, `-m conntrack --ctstate` (state only), `-m icmp` / `-m icmp6`.
/// Others, and conntrack matches on anything but the state, cannot be evaluated.
fn xt_match(name: &str, rev: u32, info: &[u8], p: &Packet) -> Result<bool, String> {
    let ct_state = p.ct_state;
    // XT_STATE_BIT / XT_CONNTRACK_STATE_BIT: invalid 1, established 2,
    // related 4, new 8; untracked 1 << 10 (conntrack) or 1 << 11 (state).
    let bit = |untracked: u32| match ct_state {
        16 => untracked,
        s => u32::from(s),
    };
    let u16_at = |at: usize| info.get(at..at + 2).map(|b| u16::from_ne_bytes([b[0], b[1]]));
    match (name, rev) {
        // struct ipt_icmp / ip6t_icmp: type, code range, invert flag.
        ("icmp" | "icmp6", _) => {
            let [kind, lo, hi, inv, ..] = info else { return Err("a short icmp match".into()) };
            if (*lo, *hi) != (0, 255) {
                return Err("an ICMP code match".into());
            }
            let hit = *kind == 0xff || p.icmp_type == Some(*kind);
            Ok(hit != (inv & 1 != 0))
        }
        // struct xt_multiport_v1: flags (0 source, 1 destination, 2 either),
        // count, ports[15] (u16), pflags[15] (1: a range starts here), invert.
        ("multiport", 1) => {
            if info.len() < 48 {
                return Err("a short multiport match".into());
            }
            let port = |i: usize| u16::from_ne_bytes([info[2 + 2 * i], info[3 + 2 * i]]);
            let count = usize::from(info[1]).min(15);
            let mut ranges = Vec::new();
            let mut i = 0;
            while i < count {
                if info[32 + i] != 0 && i + 1 < count {
                    ranges.push((port(i), port(i + 1)));
                    i += 2;
                } else {
                    ranges.push((port(i), port(i)));
                    i += 1;
                }
            }
            let inside = |x: Option<u16>| x.is_some_and(|x| ranges.iter().any(|&(lo, hi)| lo <= x && x <= hi));
            let hit = match info[0] {
                0 => inside(p.sport),
                1 => inside(p.dport),
                2 => inside(p.sport) || inside(p.dport),
                f => return Err(format!("multiport flags {f}")),
            };
            Ok(hit != (info[47] != 0))
        }
        ("state", _) => {
            let mask =
                info.get(..4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]])).ok_or("a short state match")?;
            Ok(mask & bit(1 << 11) != 0)
        }
        // struct xt_conntrack_mtinfo2/3: match_flags at 146, invert_flags at
        // 148, state_mask at 150 (after eight 16-byte addresses, two u32
        // expiry bounds and five u16 protocol and ports).
        ("conntrack", 2 | 3) => {
            let (flags, invert, mask) = (u16_at(146), u16_at(148), u16_at(150));
            let (Some(flags), Some(invert), Some(mask)) = (flags, invert, mask) else {
                return Err("a short conntrack match".into());
            };
            // XT_CONNTRACK_STATE, optionally with XT_CONNTRACK_STATE_ALIAS
            // (1 << 13: `-m state` as iptables-nft loads it).
            if flags & !(1 << 13) != 1 {
                return Err("iptables match `-m conntrack` on more than the state".into());
            }
            let hit = u32::from(mask) & bit(1 << 10) != 0;
            Ok(hit != (invert & 1 != 0))
        }
        _ => Err(format!("iptables match `-m {name}`")),
    }
}

enum Step {
    NoMatch,
    Verdict(Outcome),
    Return,
    /// Jump (false) or goto (true) to a chain.
    Jump(String, bool),
    Unknown(String),
}

/// The value of meta key `key` for the packet (include/uapi nf_tables.h).
/// The connection's status bits (`ct status`) for a packet in connection
/// state `state` (phantomc's bits): new is not yet confirmed; established
/// has seen a reply and is assured and confirmed; related is expected.
/// A packet is taken as not translated by NAT (no `dnat` or `snat` bit),
/// as explain describes it: addresses as they are on the hook. None when
/// the packet has no connection.
fn ct_status(state: u8) -> Option<u32> {
    const EXPECTED: u32 = 1;
    const SEEN_REPLY: u32 = 2;
    const ASSURED: u32 = 4;
    const CONFIRMED: u32 = 8;
    match state {
        8 => Some(0),
        2 => Some(SEEN_REPLY | ASSURED | CONFIRMED),
        4 => Some(EXPECTED),
        _ => None,
    }
}

fn meta(p: &Packet, key: u32) -> Result<Vec<u8>, String> {
    let v6 = matches!(p.src, IpAddr::V6(_));
    let ifname = |name: &Option<String>, which: &str| -> Result<Vec<u8>, String> {
        let name = name.as_deref().ok_or_else(|| format!("{which}: the packet names none (add `{which} IFACE`)"))?;
        let mut v = name.as_bytes().to_vec();
        v.resize(16, 0);
        Ok(v)
    };
    Ok(match key {
        1 => (if v6 { 0x86ddu16 } else { 0x0800 }).to_be_bytes().to_vec(),
        3 => 0u32.to_ne_bytes().to_vec(),
        6 => ifname(&p.iif, "in")?,
        7 => ifname(&p.oif, "out")?,
        15 => vec![if v6 { NFPROTO_IPV6 } else { NFPROTO_IPV4 }],
        16 => vec![p.proto],
        k => return Err(format!("meta key {k}")),
    })
}

/// A short reading of a rule's expressions: `ip saddr == 192.0.2.1 ... drop`.
pub fn describe(exprs: &[Expr]) -> String {
    let mut fields: BTreeMap<u32, String> = BTreeMap::new();
    let mut out: Vec<String> = Vec::new();
    for e in exprs {
        match e {
            Expr::Payload { base, offset, len, dreg } => {
                fields.insert(*dreg, payload_name(*base, *offset, *len));
            }
            Expr::Meta { key, dreg: Some(d) } => {
                let name = match key {
                    1 => "meta protocol",
                    6 => "iifname",
                    7 => "oifname",
                    15 => "meta nfproto",
                    16 => "meta l4proto",
                    _ => "meta",
                };
                fields.insert(*d, name.into());
            }
            Expr::Ct { key, dreg: Some(d) } => {
                fields.insert(*d, if *key == 0 { "ct state".into() } else { format!("ct key {key}") });
            }
            Expr::Bitwise { sreg, dreg, .. } => {
                let f = fields.get(sreg).cloned().unwrap_or_default();
                fields.insert(*dreg, format!("{f} & mask"));
            }
            Expr::Cmp { sreg, op, data } => {
                let f = fields.get(sreg).cloned().unwrap_or_else(|| "?".into());
                let op = ["==", "!=", "<", "<=", ">", ">="].get(*op as usize).copied().unwrap_or("?");
                out.push(format!("{f} {op} {}", value_text(&f, data)));
            }
            Expr::Range { sreg, op, from, to } => {
                let f = fields.get(sreg).cloned().unwrap_or_else(|| "?".into());
                let not = if *op == 0 { "" } else { "!= " };
                out.push(format!("{f} {not}{}-{}", value_text(&f, from), value_text(&f, to)));
            }
            Expr::Lookup { sreg, set, inverted, .. } => {
                let f = fields.get(sreg).cloned().unwrap_or_else(|| "?".into());
                out.push(format!("{f} {}@{set}", if *inverted { "!= " } else { "" }));
            }
            Expr::Verdict(v) => out.push(match v {
                Verdict::Jump(c) => format!("jump {c}"),
                Verdict::Goto(c) => format!("goto {c}"),
                other => format!("{other:?}").to_lowercase(),
            }),
            Expr::Reject => out.push("reject".into()),
            Expr::Xt { target, name, .. } => out.push(format!("{} {name}", if *target { "-j" } else { "-m" })),
            Expr::Other(name) if name != "counter" => out.push(name.clone()),
            _ => {}
        }
    }
    out.join(" ")
}

fn payload_name(base: u32, offset: u32, len: u32) -> String {
    match (base, offset, len) {
        (1, 9, 1) => "ip protocol".into(),
        (1, 12, 4) => "ip saddr".into(),
        (1, 16, 4) => "ip daddr".into(),
        (1, 6, 1) => "ip6 nexthdr".into(),
        (1, 8, 16) => "ip6 saddr".into(),
        (1, 24, 16) => "ip6 daddr".into(),
        (2, 0, 2) => "th sport".into(),
        (2, 2, 2) => "th dport".into(),
        (2, 0, 1) => "icmp type".into(),
        (2, 13, 1) => "tcp flags".into(),
        (b, o, l) => format!("@{},{},{}", ["ll", "nh", "th", "ih"].get(b as usize).unwrap_or(&"?"), o * 8, l * 8),
    }
}

fn value_text(field: &str, data: &[u8]) -> String {
    let plain = field.trim_end_matches(" & mask");
    match (plain, data.len()) {
        (f, 4) if f.ends_with("addr") => {
            std::net::Ipv4Addr::from(<[u8; 4]>::try_from(data).unwrap_or_default()).to_string()
        }
        (f, 16) if f.ends_with("addr") => {
            std::net::Ipv6Addr::from(<[u8; 16]>::try_from(data).unwrap_or_default()).to_string()
        }
        (f, 2) if f.ends_with("port") => u16::from_be_bytes([data[0], data[1]]).to_string(),
        ("meta l4proto" | "ip protocol" | "ip6 nexthdr", 1) => names::proto_name(data[0]),
        ("meta nfproto", 1) => tables::family_name(data[0]).replace("ip", "ipv4").replace("ipv46", "ipv6"),
        ("iifname" | "oifname", _) => format!("\"{}\"", String::from_utf8_lossy(data).trim_end_matches('\0')),
        ("ct state", 4) => {
            let bits = u32::from_ne_bytes(<[u8; 4]>::try_from(data).unwrap_or_default());
            let names: Vec<&str> = [(1, "invalid"), (2, "established"), (4, "related"), (8, "new"), (64, "untracked")]
                .iter()
                .filter(|(b, _)| bits & b != 0)
                .map(|(_, n)| *n)
                .collect();
            if names.is_empty() {
                "0".into()
            } else {
                names.join(",")
            }
        }
        _ => format!("0x{}", data.iter().map(|b| format!("{b:02x}")).collect::<String>()),
    }
}

/// The text form: every chain on the path, then the verdict.
pub fn render(e: &LiveExplanation) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "packet:  {}", e.packet);
    let _ = writeln!(
        out,
        "path:    {} (every base chain of every table, in the order the kernel runs them)",
        e.path.join(", ")
    );
    for (i, s) in e.steps.iter().enumerate() {
        let mark = if Some(i) == e.decided_by { "=>" } else { "  " };
        let _ = writeln!(
            out,
            "{mark} {:<11} {:>5}  {} {} {}  [{}]  {}  by {}",
            s.hook,
            s.priority,
            s.family,
            s.table,
            s.chain,
            s.owner,
            format!("{:?}", s.outcome).to_lowercase(),
            s.by
        );
    }
    let phantomc = e.phantomc.verdict.keyword();
    match e.decided_by.map(|i| &e.steps[i]) {
        Some(s) if e.verdict == "unknown" => {
            let _ = writeln!(
                out,
                "verdict: unknown: {} {} {} has an expression this cannot evaluate; phantomc alone says {phantomc}",
                s.family, s.table, s.chain
            );
        }
        Some(s) if s.owner != "phantomc" && phantomc == "pass" => {
            let _ = writeln!(
                out,
                "verdict: {} by {} {} {} ({}), although phantomc passes it ({})",
                e.verdict, s.family, s.table, s.chain, s.owner, e.phantomc.decided_by.rule
            );
        }
        Some(s) => {
            let _ = writeln!(out, "verdict: {} by {} {} {}", e.verdict, s.family, s.table, s.chain);
        }
        None => {
            let _ = writeln!(out, "verdict: pass: every base chain on the path accepts it");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nft::tables::{BaseHook, Rule, NFPROTO_INET};

    fn base(table: &str, policy_drops: bool, rules: Vec<Vec<Expr>>) -> Chain {
        Chain {
            family: NFPROTO_INET,
            table: table.into(),
            name: "input".into(),
            base: Some(BaseHook { hook: "input", priority: 10, chain_type: "filter".into(), policy_drops }),
            rules: rules.into_iter().enumerate().map(|(i, exprs)| Rule { handle: i as u64 + 2, exprs }).collect(),
        }
    }

    /// `tcp dport 80 drop` as nft compiles it.
    fn drop_port_80() -> Vec<Expr> {
        vec![
            Expr::Meta { key: 16, dreg: Some(1) },
            Expr::Cmp { sreg: 1, op: 0, data: vec![names::TCP] },
            Expr::Payload { base: 2, offset: 2, len: 2, dreg: 1 },
            Expr::Cmp { sreg: 1, op: 0, data: 80u16.to_be_bytes().to_vec() },
            Expr::Other("counter".into()),
            Expr::Verdict(Verdict::Drop),
        ]
    }

    fn live(kernel: &[Chain], pkt: &str) -> LiveExplanation {
        let c = crate::ir::compile("t.pf", "pass in proto tcp to port { 22, 80 }\n").unwrap();
        let p = super::super::packet::parse(pkt).unwrap();
        explain_live(&c.ruleset, &c.sources, &p, &SetContents::new(), kernel, &mut |_, _, _| None)
    }

    #[test]
    fn a_foreign_drop_overrides_phantomcs_pass_and_an_accept_does_not() {
        let dropper = base("other", false, vec![drop_port_80()]);
        let e = live(std::slice::from_ref(&dropper), "tcp 192.0.2.1:40000 -> 192.0.2.2:80 in eth0 new");
        assert_eq!(e.verdict, "block");
        let s = &e.steps[e.decided_by.unwrap()];
        assert_eq!((s.table.as_str(), s.outcome.clone()), ("other", Outcome::Drop));
        assert!(render(&e).contains("although phantomc passes it (t.pf:1)"), "{}", render(&e));
        assert!(s.by.contains("meta l4proto == tcp th dport == 80 drop"), "{}", s.by);
        assert_eq!(live(&[dropper], "tcp 192.0.2.1:40000 -> 192.0.2.2:22 in eth0 new").verdict, "pass");
        let accepter = base("other", false, vec![vec![Expr::Verdict(Verdict::Accept)]]);
        assert_eq!(live(&[accepter], "tcp 192.0.2.1:40000 -> 192.0.2.2:80 in eth0 new").verdict, "pass");
        let closed = base("other", true, vec![]);
        assert_eq!(live(&[closed], "tcp 192.0.2.1:40000 -> 192.0.2.2:22 in eth0 new").verdict, "block");
    }

    #[test]
    fn what_cannot_be_evaluated_is_said_not_guessed() {
        let xt = base(
            "filter",
            false,
            vec![vec![
                Expr::Xt { target: false, name: "addrtype".into(), rev: 0, info: vec![] },
                Expr::Verdict(Verdict::Drop),
            ]],
        );
        let e = live(std::slice::from_ref(&xt), "tcp 192.0.2.1:40000 -> 192.0.2.2:80 in eth0 new");
        assert_eq!(e.verdict, "unknown");
        assert!(e.steps[e.decided_by.unwrap()].by.contains("cannot evaluate iptables match `-m addrtype`"));
        // A certain drop later on the path still decides.
        let mut later = base("later", true, vec![]);
        later.base.as_mut().unwrap().priority = 20;
        assert_eq!(live(&[xt, later], "tcp 192.0.2.1:40000 -> 192.0.2.2:80 in eth0 new").verdict, "block");
    }

    #[test]
    fn ct_state_masks_and_interval_sets_evaluate() {
        // ct state established,related accept; ip saddr @bad drop (an interval set).
        let est = vec![
            Expr::Ct { key: 0, dreg: Some(1) },
            Expr::Bitwise {
                sreg: 1,
                dreg: 1,
                len: 4,
                mask: 6u32.to_ne_bytes().to_vec(),
                xor: vec![0; 4],
                shift: false,
            },
            Expr::Cmp { sreg: 1, op: 1, data: vec![0; 4] },
            Expr::Verdict(Verdict::Accept),
        ];
        let bad = vec![
            Expr::Payload { base: 1, offset: 12, len: 4, dreg: 1 },
            Expr::Lookup { sreg: 1, set: "bad".into(), map: false, inverted: false },
            Expr::Verdict(Verdict::Drop),
        ];
        let chain = base("other", false, vec![est, bad]);
        let c = crate::ir::compile("t.pf", "pass in\n").unwrap();
        let mut sets = |_: u8, _: &str, name: &str| {
            (name == "bad").then(|| SetKeys::Intervals(vec![(vec![198, 51, 100, 0], vec![198, 51, 100, 255])]))
        };
        let run = |pkt: &str, sets: &mut SetReader| {
            let p = super::super::packet::parse(pkt).unwrap();
            explain_live(&c.ruleset, &c.sources, &p, &SetContents::new(), std::slice::from_ref(&chain), sets).verdict
        };
        assert_eq!(run("tcp 198.51.100.7:1 -> 192.0.2.2:80 in eth0 new", &mut sets), "block");
        assert_eq!(run("tcp 198.51.100.7:1 -> 192.0.2.2:80 in eth0 established", &mut sets), "pass");
        assert_eq!(run("tcp 198.51.101.7:1 -> 192.0.2.2:80 in eth0 new", &mut sets), "pass");
    }
}
