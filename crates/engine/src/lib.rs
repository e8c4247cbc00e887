//! The faramesh decision engine (SPEC §3.5–3.13, §4, §5 steps 1–7).
//!
//! A checked policy is compiled once ([`compile`]); each call is canonicalised ([`car`]) and
//! decided against the compiled form and the state behind [`state::StateStore`], with time
//! from a [`clock::Clock`]. The same input always gives the same decision.

pub mod car;
pub mod clock;
pub mod compile;
pub mod decision;
pub mod doc;
pub mod egress;
pub mod engine;
pub mod eval;
pub mod redact;
pub mod selector;
mod sha;
pub mod state;
