//! The faramesh daemon (SPEC §5, §7, §8): the engine and the audit log behind the sockets and
//! the HTTP API that agents and operators talk to.
//!
//! - [`core`]: the one decision path every adapter hands its calls to.
//! - [`approvals`]: defer → pending approval → permit once.
//! - [`agent`], [`admin`], [`http`]: the agent socket, the operator socket, the HTTP API.
//! - [`server`]: lifecycle, sockets, signals, draining.
//! - [`client`]: what the CLI uses to reach a running daemon.

pub mod admin;
pub mod agent;
pub mod approvals;
pub mod client;
pub mod control;
pub mod core;
pub mod credentials;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod policy;
pub mod reports;
pub mod rpc;
pub mod server;
pub mod stack;
