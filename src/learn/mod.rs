//! Learner: proposes policy changes from observed traffic.

pub mod conntrack;
