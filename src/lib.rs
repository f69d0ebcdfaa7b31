//! phantomc: a declarative firewall policy compiler and offline analyzer
//! for nftables.
//!
//! Pipeline: [`policy`] (parse) -> [`ir`] (meaning) -> [`nft`] (emit, apply).

pub mod analyze;
pub mod cli;
pub mod diag;
pub mod feeds;
pub mod guard;
pub mod host;
pub mod import;
pub mod input;
pub mod ir;
pub mod learn;
pub mod netlink;
pub mod nft;
pub mod policy;
pub mod serve;
pub mod watch;
