//! The offline analyzer: questions about a policy answered without root and
//! without a firewall (`explain`, `test`, `lint`, `diff`).
//!
//! Concrete packets go through the exact evaluator [`crate::ir::eval`];
//! questions about all packets at once (shadowing, semantic diff) use exact
//! header-space reasoning in [`space`]. Beside phantomc's table, [`coexist`]
//! lists the other firewalls' chains on the same hooks and [`live`] follows a
//! packet through all of them (read from the kernel).

pub mod cases;
pub mod coexist;
pub mod diff;
pub mod entries;
pub mod explain;
pub mod index;
pub mod lint;
pub mod live;
pub mod lockout;
pub mod packet;
pub mod report;
pub mod space;
