//! Structured logs through `tracing`: JSON lines when stderr is not a terminal (a service
//! manager or a log file), human-readable text when it is. `FARAMESH_LOG` filters
//! (`info` by default; e.g. `FARAMESH_LOG=debug`).

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

pub fn init() {
    let filter = EnvFilter::try_from_env("FARAMESH_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let terminal = std::io::stderr().is_terminal();
    let color = terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    // A second init (tests) keeps the first subscriber.
    let _ = if terminal {
        builder.with_ansi(color).try_init()
    } else {
        builder.json().with_current_span(false).try_init()
    };
}
