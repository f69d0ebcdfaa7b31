//! phantomc: a declarative firewall policy compiler and offline analyzer
//! for nftables.
//!
//! Pipeline: [`policy`] (parse) -> [`ir`] (meaning) -> [`nft`] (emit, apply).

pub mod diag;
pub mod ir;
pub mod policy;
pub mod cli;
pub mod nft;
pub mod watch;
pub mod learn;
