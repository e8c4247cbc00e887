//! FPL, the faramesh policy language.
//!
//! Text becomes a policy in stages, each its own module: [`lexer`] → [`parser`] (AST, with every
//! syntax error) → [`check`] (the static checks of SPEC §3.11). [`format`] prints an AST in the
//! one canonical layout; [`load`] reads stacks in FPL, YAML or JSON and resolves imports.

pub mod ast;
pub mod check;
pub mod diagnostic;
pub mod format;
pub mod lexer;
pub mod load;
pub mod parser;
pub mod pattern;
pub mod span;

pub use ast::Policy;
pub use diagnostic::{Code, Diagnostic, Severity};
pub use parser::{Parsed, parse, parse_expr};
