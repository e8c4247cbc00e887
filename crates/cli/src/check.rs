//! `faramesh check`

use std::path::Path;
use std::process::ExitCode;

use fpl::load::{LoadOptions, Loaded, load};

use crate::{OutputFormat, shown, use_color, write_stdout};

pub const EXIT_ERRORS: u8 = 1;
pub const EXIT_IMPORT: u8 = 2;
pub const EXIT_STRICT_WARNINGS: u8 = 3;

pub fn run(path: &Path, strict: bool, format: OutputFormat) -> ExitCode {
    let loaded = load(path, &LoadOptions::from_env());
    let code = exit_code(&loaded, strict);
    match format {
        OutputFormat::Json => print_json(path, &loaded, code),
        OutputFormat::Text => print_text(path, &loaded, strict),
    }
    ExitCode::from(code)
}

fn exit_code(loaded: &Loaded, strict: bool) -> u8 {
    if loaded.unresolved_import {
        EXIT_IMPORT
    } else if loaded.errors() > 0 {
        EXIT_ERRORS
    } else if strict && loaded.warnings() > 0 {
        EXIT_STRICT_WARNINGS
    } else {
        0
    }
}

fn print_text(path: &Path, loaded: &Loaded, strict: bool) {
    let color = use_color(&std::io::stdout());
    let mut out = String::new();
    for d in &loaded.diagnostics {
        out.push_str(&d.render(color));
        out.push('\n');
    }
    let target = loaded
        .root
        .as_ref()
        .map_or_else(|| shown(path), |r| r.file.display.clone());
    let (errors, warnings) = (loaded.errors(), loaded.warnings());
    if errors == 0 && (warnings == 0 || !strict) {
        let agents = loaded.policy.agents.len() + usize::from(!loaded.policy.rules.is_empty());
        let rules: usize = loaded
            .policy
            .agents
            .iter()
            .map(|a| a.rules.len())
            .sum::<usize>()
            + loaded.policy.rules.len();
        out += &format!(
            "{target}: valid ({agents} agent{}, {rules} rule{}{})\n",
            plural(agents),
            plural(rules),
            if warnings > 0 {
                format!(", {warnings} warning{}", plural(warnings))
            } else {
                String::new()
            }
        );
    } else {
        out += &format!(
            "{target}: {errors} error{}, {warnings} warning{}\n",
            plural(errors),
            plural(warnings)
        );
    }
    write_stdout(&out);
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn print_json(path: &Path, loaded: &Loaded, code: u8) {
    let out = serde_json::json!({
        "path": shown(path),
        "file": loaded.root.as_ref().map(|r| r.file.display.clone()),
        "valid": loaded.errors() == 0,
        "exit_code": code,
        "errors": loaded.errors(),
        "warnings": loaded.warnings(),
        "diagnostics": loaded.diagnostics.iter().map(|d| d.to_json()).collect::<Vec<_>>(),
    });
    write_stdout(&format!("{out:#}\n"));
}
