//! Arbitrary bytes through the loader's front door, as `faramesh check` reads a file.
//!
//! Every input: decode (UTF-8, NUL, size), sniff the format, parse, and render each diagnostic
//! the way the CLI prints it. An input that parses without errors is also checked, and must
//! survive the formatter: `parse(format_policy(p))` has no errors and equals `p`.
#![no_main]

use std::path::Path;
use std::sync::Arc;

use fpl::check::{CheckEnv, check};
use fpl::diagnostic::FileDiagnostic;
use fpl::load::{Format, parse_bytes};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = parse_bytes(Path::new("fuzz.fms"), "fuzz.fms".to_string(), data);
    let source = parsed.file.text.clone();
    render(&source, &parsed.diagnostics);
    if parsed.has_errors() {
        return;
    }
    let fpl_source = (parsed.file.format == Format::Fpl).then_some(source.as_str());
    let env = |name: &str| (name == "SET").then(|| "1".to_string());
    let found = check(
        &parsed.policy,
        &CheckEnv {
            source: fpl_source,
            env: &env,
        },
    );
    render(&source, &found);

    // The round trip is the formatter's contract for FPL text; policies read from JSON/YAML
    // may hold values FPL cannot spell until the checker rejects them, so they are left to the
    // checker above.
    if parsed.file.format != Format::Fpl {
        return;
    }
    let printed = fpl::format::format_policy(&parsed.policy);
    let reparsed = fpl::parse(&printed);
    let errors: Vec<_> = reparsed
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .collect();
    assert!(
        errors.is_empty(),
        "formatted policy does not parse: {errors:#?}\n--- formatted ---\n{printed}"
    );
    assert!(
        reparsed.policy == parsed.policy,
        "formatted policy parses to a different AST\n--- formatted ---\n{printed}\n--- before ---\n{:#?}\n--- after ---\n{:#?}",
        parsed.policy,
        reparsed.policy
    );
});

/// What `faramesh check` prints: each diagnostic as text (with its source excerpt) and JSON.
/// The first few are enough to exercise every span: miette's renderer dominates the run time.
fn render(source: &Arc<String>, diagnostics: &[fpl::Diagnostic]) {
    for d in diagnostics.iter().take(8) {
        let fd = FileDiagnostic {
            file: "fuzz.fms".to_string(),
            source: source.clone(),
            diagnostic: d.clone(),
        };
        std::hint::black_box(fd.render(false));
        std::hint::black_box(fd.to_json());
    }
}
