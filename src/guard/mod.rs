//! The lockout guard: nothing phantomc loads may cut off the operator.
//!
//! Two parts, used by every path that changes the kernel (`apply`, `watch`
//! reloads, feed updates, `block` from the CLI and the API, learned
//! proposals, adaptive blocks):
//! - [`Protected`]: addresses no block may cover (loopback, link-local, this
//!   host's addresses, the default gateways, `allow-always`, sources the
//!   policy passes explicitly, the operator's session clients), each with
//!   its reason. Blocks of them are refused; feeds have them cut out.
//! - [`check`]: evaluates a new ruleset with its set contents against
//!   loopback, the operator's sessions both ways (with related ICMP) and new
//!   logins from those clients to the management port. A failing change is
//!   refused with the reason and nothing is loaded. Only a human may
//!   override it (`--force`); automatic paths never do.
//!
//! The guard sits below every caller: it reads the policy's IR and kernel
//! facts ([`crate::host`]) and never calls a command or service module.

mod check;
mod operator;
mod protected;

pub use check::{check, probes, Checked, Lockout, Probe, Refusal};
pub use operator::{Operator, OperatorSession, Source, SSH_PORT};
pub use protected::{show, BlockRefusal, Cut, Entry, Kind, Protected, BROADEST_BLOCK};

use std::net::IpAddr;

use ipnet::IpNet;

use crate::ir::eval::SetContents;
use crate::ir::Ruleset;

/// Vets a rewritten policy that blocks new sources (learned proposals):
/// none of `blocked` may be protected (by the policy before the rewrite, or
/// by this host), and the new ruleset must pass [`check`].
/// Returns every reason it is refused.
pub fn check_rewrite(
    before: &Ruleset,
    after: &Ruleset,
    blocked: &[IpAddr],
    operator: &Operator,
) -> Result<Checked, Vec<String>> {
    // Pass rules the rewrite itself adds protect nothing yet: they come from
    // the same (possibly spoofed) traffic.
    let protected = Protected::gather(Some(before), operator);
    let mut reasons: Vec<String> =
        blocked.iter().filter_map(|&ip| protected.check_block(IpNet::from(ip)).err()).map(|r| r.to_string()).collect();
    match check(after, &SetContents::new(), operator) {
        Ok(checked) if reasons.is_empty() => return Ok(checked),
        Ok(_) => {}
        Err(refusal) => reasons.extend(refusal.reasons),
    }
    Err(reasons)
}
