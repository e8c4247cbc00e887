//! `faramesh fmt`

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use fpl::Policy;
use fpl::load::{Format, ParsedFile, policy_path, read_file};

use crate::{Form, use_color, write_stdout};

pub fn run(path: &Path, check: bool, write: bool, to: Option<Form>) -> ExitCode {
    let file = match policy_path(path) {
        Ok(f) => f,
        Err(msg) => return fail(&msg),
    };
    let parsed = match read_file(&file, file.display().to_string()) {
        Ok(p) => p,
        Err(d) => return fail(&d.diagnostic.message),
    };
    if parsed.has_errors() {
        let color = use_color(&std::io::stderr());
        for d in parsed.diagnostics.iter().filter(|d| d.is_error()) {
            let fd = fpl::diagnostic::FileDiagnostic {
                file: parsed.file.display.clone(),
                source: parsed.file.text.clone(),
                diagnostic: d.clone(),
            };
            eprintln!("{}", fd.render(color));
        }
        eprintln!(
            "{}: not formatted: fix the errors above first",
            parsed.file.display
        );
        return ExitCode::from(1);
    }
    let target = to.map_or(parsed.file.format, |f| match f {
        Form::Fpl => Format::Fpl,
        Form::Yaml => Format::Yaml,
        Form::Json => Format::Json,
    });
    let output = match render(&parsed.policy, target) {
        Ok(o) => o,
        Err(e) => return fail(&e),
    };
    if check {
        return check_only(&parsed, &output);
    }
    if write {
        return write_out(&parsed, target, &output);
    }
    write_stdout(&output);
    ExitCode::SUCCESS
}

/// The policy in the given form; FPL keeps comments, YAML and JSON cannot.
pub fn render(policy: &Policy, format: Format) -> Result<String, String> {
    match format {
        Format::Fpl => Ok(fpl::format::format_policy(policy)),
        Format::Json => serde_json::to_string_pretty(policy)
            .map(|s| s + "\n")
            .map_err(|e| format!("cannot write JSON: {e}")),
        Format::Yaml => {
            serde_saphyr::to_string(policy).map_err(|e| format!("cannot write YAML: {e}"))
        }
    }
}

fn check_only(parsed: &ParsedFile, output: &str) -> ExitCode {
    if parsed.file.text.as_str() == output {
        return ExitCode::SUCCESS;
    }
    let first_diff = parsed
        .file
        .text
        .lines()
        .zip(output.lines())
        .position(|(a, b)| a != b)
        .map_or_else(
            || parsed.file.text.lines().count().min(output.lines().count()) + 1,
            |i| i + 1,
        );
    eprintln!(
        "{}: not in canonical form (first difference at line {first_diff}); run `faramesh fmt --write`",
        parsed.file.display
    );
    ExitCode::from(1)
}

fn write_out(parsed: &ParsedFile, target: Format, output: &str) -> ExitCode {
    let dest = converted_path(&parsed.file.path, parsed.file.format, target);
    if let Err(e) = std::fs::write(&dest, output) {
        return fail(&format!("cannot write {}: {e}", dest.display()));
    }
    if dest != parsed.file.path {
        // A stack holds one policy file: the converted file replaces the original.
        if let Err(e) = std::fs::remove_file(&parsed.file.path) {
            return fail(&format!(
                "wrote {} but could not remove {}: {e}",
                dest.display(),
                parsed.file.path.display()
            ));
        }
        eprintln!(
            "converted {} to {}",
            parsed.file.path.display(),
            dest.display()
        );
    }
    ExitCode::SUCCESS
}

/// `governance.fms` → `governance.fms.yaml` and back.
fn converted_path(path: &Path, from: Format, to: Format) -> PathBuf {
    if from == to {
        return path.to_path_buf();
    }
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("governance.fms");
    let stem = name
        .strip_suffix(".yaml")
        .or_else(|| name.strip_suffix(".yml"))
        .or_else(|| name.strip_suffix(".json"))
        .unwrap_or(name);
    let new = match to {
        Format::Fpl => stem.to_string(),
        Format::Yaml => format!("{stem}.yaml"),
        Format::Json => format!("{stem}.json"),
    };
    path.with_file_name(new)
}

fn fail(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(1)
}
