//! The offline analyzer: questions about a policy answered without root and
//! without a firewall (`explain`, `test`, `lint`, `diff`).
//!
//! Concrete packets go through the exact evaluator [`crate::ir::eval`];
//! questions about all packets at once (shadowing, semantic diff) use exact
//! header-space reasoning in [`space`].

pub mod cases;
pub mod explain;
pub mod packet;
pub mod space;
pub mod lint;
pub mod report;
pub mod diff;
