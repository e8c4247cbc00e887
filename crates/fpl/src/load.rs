//! Reading stacks: find the policy file, read it safely in any of its three forms, resolve and
//! verify imports, merge them under local content, and run every check.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;

use crate::ast::{Agent, Effect, Literal, NamedBlock, Policy, Rule, Value};
use crate::check::{CheckEnv, check, registry_relative};
use crate::diagnostic::{Code, Diagnostic, FileDiagnostic, Severity};
use crate::parser::parse;
use crate::pattern::ToolPattern;
use crate::span::Span;

/// Policy files larger than this are refused before parsing.
pub const MAX_FILE_BYTES: usize = 8 << 20;
/// After this many diagnostics in one file, the rest are summarised.
pub const MAX_DIAGNOSTICS_PER_FILE: usize = 200;

/// The file names a stack directory may hold, in the order they are looked for.
pub const STACK_FILES: [&str; 4] = [
    "governance.fms",
    "governance.fms.yaml",
    "governance.fms.yml",
    "governance.fms.json",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Fpl,
    Yaml,
    Json,
}

impl Format {
    /// By extension; a plain `.fms` is sniffed: first non-blank, non-comment character `{` means
    /// JSON, a first line `---` means YAML.
    pub fn detect(path: &Path, text: &str) -> Format {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.ends_with(".yaml") || name.ends_with(".yml") {
            return Format::Yaml;
        }
        if name.ends_with(".json") {
            return Format::Json;
        }
        for line in text.lines() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            if t.starts_with('{') {
                return Format::Json;
            }
            if t == "---" {
                return Format::Yaml;
            }
            break;
        }
        Format::Fpl
    }
}

/// Where imports come from, and how strictly to treat them.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `FARAMESH_REGISTRY_ROOT`: `<root>/<registry>/<kind>/<name>/<version>/policy.fms`.
    pub registry_root: Option<PathBuf>,
}

impl LoadOptions {
    pub fn from_env() -> LoadOptions {
        LoadOptions {
            registry_root: std::env::var_os("FARAMESH_REGISTRY_ROOT").map(PathBuf::from),
        }
    }
}

/// A policy file as read from disk.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub path: PathBuf,
    /// How the path is shown in diagnostics.
    pub display: String,
    pub text: Arc<String>,
    pub format: Format,
}

/// One file parsed on its own.
#[derive(Debug)]
pub struct ParsedFile {
    pub file: SourceFile,
    pub policy: Policy,
    pub diagnostics: Vec<Diagnostic>,
}

impl ParsedFile {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(Diagnostic::is_error)
    }

    fn located(&self) -> Vec<FileDiagnostic> {
        locate(&self.file, self.diagnostics.clone())
    }
}

/// A stack after loading: its own file, the merged policy, and everything found wrong.
#[derive(Debug)]
pub struct Loaded {
    /// The stack's own policy file, if it could be read.
    pub root: Option<ParsedFile>,
    /// The policy with imports merged under local content.
    pub policy: Policy,
    pub diagnostics: Vec<FileDiagnostic>,
    /// An import could not be found (exit code 2).
    pub unresolved_import: bool,
}

impl Loaded {
    pub fn errors(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.diagnostic.is_error())
            .count()
    }

    pub fn warnings(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.diagnostic.severity == Severity::Warning)
            .count()
    }
}

fn locate(file: &SourceFile, diags: Vec<Diagnostic>) -> Vec<FileDiagnostic> {
    diags
        .into_iter()
        .map(|diagnostic| FileDiagnostic {
            file: file.display.clone(),
            source: file.text.clone(),
            diagnostic,
        })
        .collect()
}

fn io_diagnostic(display: &str, message: String) -> FileDiagnostic {
    FileDiagnostic {
        file: display.to_string(),
        source: Arc::new(String::new()),
        diagnostic: Diagnostic::new(Code::Io, message),
    }
}

/// Finds the policy file of a stack directory, or takes a file path as it is.
pub fn policy_path(path: &Path) -> Result<PathBuf, String> {
    if !path.is_dir() {
        if path.exists() {
            return Ok(path.to_path_buf());
        }
        return Err(format!("{} does not exist", path.display()));
    }
    let found: Vec<PathBuf> = STACK_FILES
        .iter()
        .map(|f| path.join(f))
        .filter(|p| p.is_file())
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!(
            "{} holds no policy: expected one of {}",
            path.display(),
            STACK_FILES.join(", ")
        )),
        many => Err(format!(
            "{} holds more than one policy file ({}); keep one",
            path.display(),
            many.iter()
                .filter_map(|p| p.file_name()?.to_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

/// Reads and parses one policy file; unreadable or hostile bytes become a diagnostic.
pub fn read_file(path: &Path, display: String) -> Result<ParsedFile, Box<FileDiagnostic>> {
    let bytes = std::fs::read(path).map_err(|e| {
        Box::new(io_diagnostic(
            &display,
            format!("cannot read {}: {e}", path.display()),
        ))
    })?;
    Ok(parse_bytes(path, display, &bytes))
}

/// Parses policy bytes in whichever form the path and content say.
pub fn parse_bytes(path: &Path, display: String, bytes: &[u8]) -> ParsedFile {
    let (text, problem) = decode(bytes);
    let format = Format::detect(path, &text);
    let file = SourceFile {
        path: path.to_path_buf(),
        display,
        text: Arc::new(text),
        format,
    };
    if let Some(d) = problem {
        return ParsedFile {
            file,
            policy: Policy::default(),
            diagnostics: vec![d],
        };
    }
    let (policy, mut diagnostics) = parse_text(&file.text, format);
    if diagnostics.len() > MAX_DIAGNOSTICS_PER_FILE {
        let extra = diagnostics.len() - MAX_DIAGNOSTICS_PER_FILE;
        diagnostics.truncate(MAX_DIAGNOSTICS_PER_FILE);
        diagnostics.push(Diagnostic::new(
            Code::BadInput,
            format!("{extra} more problems not shown; fix the ones above first"),
        ));
    }
    ParsedFile {
        file,
        policy,
        diagnostics,
    }
}

/// Text for the source view, and the reason the bytes are not a policy, if they are not.
fn decode(bytes: &[u8]) -> (String, Option<Diagnostic>) {
    if bytes.len() > MAX_FILE_BYTES {
        let d = Diagnostic::new(
            Code::BadInput,
            format!(
                "the file is {} bytes; policy files are limited to {} MiB",
                bytes.len(),
                MAX_FILE_BYTES >> 20
            ),
        )
        .help("split it with imports, or use tool patterns instead of one rule per tool");
        return (String::new(), Some(d));
    }
    match std::str::from_utf8(bytes) {
        Err(e) => {
            let at = e.valid_up_to();
            let text = String::from_utf8_lossy(bytes).into_owned();
            let shown = text[..floor_boundary(&text, at)].len();
            let d = Diagnostic::new(
                Code::BadInput,
                format!("the file is not valid UTF-8 (byte {at})"),
            )
            .at(Span::new(shown, shown + 1))
            .label("invalid byte here")
            .help("save the policy as UTF-8 text");
            (text, Some(d))
        }
        Ok(text) => {
            let nul = text.find('\0').map(|at| {
                Diagnostic::new(Code::BadInput, "the file contains a NUL byte")
                    .at(Span::new(at, at + 1))
                    .label("NUL here")
                    .help("policy files are text; remove the NUL bytes")
            });
            (text.to_string(), nul)
        }
    }
}

fn floor_boundary(s: &str, mut i: usize) -> usize {
    i = i.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Text in a known form → AST and diagnostics.
pub fn parse_text(text: &str, format: Format) -> (Policy, Vec<Diagnostic>) {
    match format {
        Format::Fpl => {
            let parsed = parse(text);
            (parsed.policy, parsed.diagnostics)
        }
        Format::Json => match serde_json::from_str::<Policy>(&without_leading_comments(text)) {
            Ok(p) => normalize(p),
            Err(e) => {
                let at = offset_of(text, e.line(), e.column());
                let d = Diagnostic::new(Code::BadYamlJson, format!("not a valid JSON policy: {e}"))
                    .at(Span::new(at, at))
                    .help("see docs/fpl.md for the JSON form, or convert an FPL file with `faramesh fmt --to json`");
                (Policy::default(), vec![d])
            }
        },
        Format::Yaml => match serde_saphyr::from_str::<Policy>(text) {
            Ok(p) => normalize(p),
            Err(e) => {
                let msg = e.to_string();
                let first = msg
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim_start_matches("error: ")
                    .to_string();
                let mut d = Diagnostic::new(
                    Code::BadYamlJson,
                    format!("not a valid YAML policy: {first}"),
                );
                if let Some(loc) = e.location() {
                    let at = offset_of(
                        text,
                        usize::try_from(loc.line()).unwrap_or(usize::MAX),
                        usize::try_from(loc.column()).unwrap_or(usize::MAX),
                    );
                    d = d.at(Span::new(at, at));
                }
                let d = d
                    .help("see docs/fpl.md for the YAML form, or convert an FPL file with `faramesh fmt --to yaml`");
                (Policy::default(), vec![d])
            }
        },
    }
}

/// YAML and JSON write a selector's `key` as a plain string; in FPL it is an expression.
fn normalize(mut policy: Policy) -> (Policy, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    for selector in &mut policy.selectors {
        for e in selector.entries.iter_mut().filter(|e| e.key.value == "key") {
            if let Value::Lit(Literal::Str(text)) = &e.value.value {
                match crate::parser::parse_expr(text) {
                    Ok(expr) => e.value.value = Value::Expr(expr),
                    Err(errs) => diags.push(Diagnostic::new(
                        Code::BadValue,
                        format!(
                            "selector `{}`: `key` is not an expression: {}",
                            selector.name.value,
                            errs.first().map_or("", |d| d.message.as_str())
                        ),
                    )),
                }
            }
        }
    }
    // FPL text cannot hold a NUL character; YAML and JSON could smuggle one in with an escape.
    if serde_json::to_string(&policy).is_ok_and(|json| json.contains("\\u0000")) {
        diags.push(
            Diagnostic::new(Code::BadInput, "a string contains a NUL character")
                .help("remove the `\\u0000` escapes; policy text cannot hold NUL"),
        );
    }
    (policy, diags)
}

/// A `.fms` file sniffed as JSON may start with `#` comment lines; JSON itself has no comments,
/// so they become blank lines (keeping line numbers).
fn without_leading_comments(text: &str) -> std::borrow::Cow<'_, str> {
    let first_code = text
        .lines()
        .position(|l| !(l.trim().is_empty() || l.trim_start().starts_with('#')))
        .unwrap_or(0);
    if first_code == 0 {
        return text.into();
    }
    let mut out = "\n".repeat(first_code);
    out.push_str(
        &text
            .split_inclusive('\n')
            .skip(first_code)
            .collect::<String>(),
    );
    out.into()
}

fn offset_of(text: &str, line: usize, column: usize) -> usize {
    let start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    floor_boundary(text, start + column.saturating_sub(1))
}

/// Loads a stack (a directory) or a single policy file, with its imports, and checks it all.
pub fn load(path: &Path, opts: &LoadOptions) -> Loaded {
    let mut loaded = Loaded {
        root: None,
        policy: Policy::default(),
        diagnostics: Vec::new(),
        unresolved_import: false,
    };
    let file = match policy_path(path) {
        Ok(f) => f,
        Err(msg) => {
            loaded
                .diagnostics
                .push(io_diagnostic(&path.display().to_string(), msg));
            return loaded;
        }
    };
    let root = match read_file(&file, file.display().to_string()) {
        Ok(r) => r,
        Err(d) => {
            loaded.diagnostics.push(*d);
            return loaded;
        }
    };
    let mut merged = root.policy.clone();
    let mut resolver = Resolver {
        opts,
        trust: &root.policy.trust,
        diagnostics: Vec::new(),
        unresolved: false,
        visiting: HashSet::new(),
    };
    let mut diagnostics = root.located();
    if !root.has_errors_of(Code::BadInput) {
        diagnostics.extend(check_file(&root));
        for import in root.policy.imports.clone() {
            resolver.import(&root, &import, &mut merged);
        }
    }
    diagnostics.extend(resolver.diagnostics);
    loaded.unresolved_import = resolver.unresolved;
    dedup(&mut diagnostics);
    // Stable: files keep their order (the stack's own first), each in source order.
    let order: Vec<String> =
        diagnostics
            .iter()
            .map(|d| d.file.clone())
            .fold(Vec::new(), |mut v, f| {
                if !v.contains(&f) {
                    v.push(f);
                }
                v
            });
    diagnostics.sort_by_key(|d| {
        (
            order.iter().position(|f| *f == d.file),
            d.diagnostic.span.map(|s| s.start),
        )
    });
    loaded.diagnostics = diagnostics;
    loaded.policy = merged;
    loaded.root = Some(root);
    loaded
}

/// The checker's findings on one parsed file. A finding at a place the parser already reported
/// is dropped (it would only restate the syntax error), and YAML/JSON findings carry no
/// position, since the AST's spans then do not point into the file.
fn check_file(parsed: &ParsedFile) -> Vec<FileDiagnostic> {
    let env = |name: &str| std::env::var(name).ok();
    let is_fpl = parsed.file.format == Format::Fpl;
    let found = check(
        &parsed.policy,
        &CheckEnv {
            source: is_fpl.then_some(parsed.file.text.as_str()),
            env: &env,
        },
    );
    let syntax: Vec<Span> = parsed
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .filter_map(|d| d.span)
        .collect();
    let overlaps = |s: Span| {
        syntax
            .iter()
            .any(|e| s.start < e.end.max(e.start + 1) && e.start < s.end.max(s.start + 1))
    };
    let kept = found
        .into_iter()
        .filter(|d| !d.span.is_some_and(overlaps))
        .map(|mut d| {
            if !is_fpl {
                d.span = None;
            }
            d
        })
        .collect();
    locate(&parsed.file, kept)
}

impl ParsedFile {
    fn has_errors_of(&self, code: Code) -> bool {
        self.diagnostics.iter().any(|d| d.code == code)
    }
}

fn dedup(diags: &mut Vec<FileDiagnostic>) {
    let mut seen = HashSet::new();
    diags.retain(|d| {
        seen.insert((
            d.file.clone(),
            d.diagnostic.span,
            d.diagnostic.code,
            d.diagnostic.message.clone(),
        ))
    });
}

struct Resolver<'a> {
    opts: &'a LoadOptions,
    trust: &'a [crate::ast::TrustKey],
    diagnostics: Vec<FileDiagnostic>,
    unresolved: bool,
    visiting: HashSet<PathBuf>,
}

impl Resolver<'_> {
    /// Resolves, verifies, checks and merges one import written in `from`.
    fn import(&mut self, from: &ParsedFile, import: &crate::ast::Import, merged: &mut Policy) {
        let path = &import.path.value;
        let here = |d: Diagnostic| locate(&from.file, vec![d.at(import.path.span)]);
        let Some((name, version)) = path.rsplit_once('@') else {
            return; // reported by the checker as unpinned
        };
        if !crate::check::is_exact_semver(version) {
            return; // reported by the checker as unpinned
        }
        if registry_relative(name).is_err() {
            return; // reported by the checker
        }
        let Some(root) = &self.opts.registry_root else {
            self.unresolved = true;
            self.diagnostics.extend(here(
                Diagnostic::new(Code::ImportNotFound, format!("cannot resolve import `{path}`: no registry is configured"))
                    .help("set FARAMESH_REGISTRY_ROOT to a local registry directory laid out as <root>/<registry>/<kind>/<name>/<version>/policy.fms"),
            ));
            return;
        };
        let dir = root.join(name).join(version);
        let Some(file) = ["policy.fms", "policy.fms.yaml", "policy.fms.json"]
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
        else {
            self.unresolved = true;
            self.diagnostics.extend(here(
                Diagnostic::new(Code::ImportNotFound, format!("cannot resolve import `{path}`"))
                    .label("not found in the registry")
                    .help(format!("looked for {}/policy.fms; check the name and version, or FARAMESH_REGISTRY_ROOT", dir.display())),
            ));
            return;
        };
        let canonical = file.canonicalize().unwrap_or_else(|_| file.clone());
        if !self.visiting.insert(canonical.clone()) {
            self.diagnostics.extend(here(
                Diagnostic::new(Code::ImportCycle, format!("import `{path}` forms a cycle"))
                    .help("an imported policy imports this one again; remove one of the imports"),
            ));
            return;
        }
        match read_file(&file, format!("{path} ({})", file.display())) {
            Err(d) => {
                self.unresolved = true;
                self.diagnostics.push(*d);
            }
            Ok(parsed) => {
                if !self.verify(from, import, &parsed) {
                    // Unverified content is reported, never merged.
                    self.visiting.remove(&canonical);
                    return;
                }
                self.diagnostics.extend(parsed.located());
                self.diagnostics.extend(check_file(&parsed));
                let mut imported = parsed.policy.clone();
                for nested in parsed.policy.imports.clone() {
                    self.import(&parsed, &nested, &mut imported);
                }
                self.mandatory_denies(from, merged, &imported, &parsed);
                merge_under(merged, imported);
            }
        }
        self.visiting.remove(&canonical);
    }

    /// With a trust key for the import's registry, `policy.fms.sig` must hold a valid Ed25519
    /// signature of the file; without one the import is only as good as the registry mirror.
    /// Returns whether the import may be used: unsigned imports may (with a warning), imports
    /// that fail their registry's key may not.
    fn verify(
        &mut self,
        from: &ParsedFile,
        import: &crate::ast::Import,
        parsed: &ParsedFile,
    ) -> bool {
        let path = &import.path.value;
        let here = |d: Diagnostic| locate(&from.file, vec![d.at(import.path.span)]);
        // The most specific registry whose path is a whole-segment prefix of the import.
        let Some(key) = self
            .trust
            .iter()
            .filter(|k| {
                let reg = k.registry.value.trim_end_matches('/');
                path.strip_prefix(reg)
                    .is_some_and(|rest| rest.starts_with('/'))
            })
            .max_by_key(|k| k.registry.value.len())
        else {
            self.diagnostics.extend(here(
                Diagnostic::new(
                    Code::UnsignedImport,
                    format!("import `{path}` is not verified"),
                )
                .label("no trust key covers this registry")
                .help(
                    "declare the registry's key: `trust { key \"<registry>\" ed25519:<base64> }`",
                ),
            ));
            return true;
        };
        let sig_path = PathBuf::from(format!("{}.sig", parsed.file.path.display()));
        let result = std::fs::read_to_string(&sig_path)
            .map_err(|_| format!("{} is missing", sig_path.display()))
            .and_then(|sig| {
                verify_signature(&key.key.value, sig.trim(), parsed.file.text.as_bytes())
            });
        if let Err(why) = &result {
            self.diagnostics.extend(here(
                Diagnostic::new(
                    Code::ImportUnverified,
                    format!("import `{path}` failed verification: {why}"),
                )
                .label("signature does not verify")
                .help("the registry copy may have been altered; fetch it again from the registry"),
            ));
        }
        result.is_ok()
    }

    /// An imported `deny!` is tried before local rules: a local permit/defer it covers is dead.
    fn mandatory_denies(
        &mut self,
        from: &ParsedFile,
        local: &Policy,
        imported: &Policy,
        source: &ParsedFile,
    ) {
        let local_agents = agents_with_flat(local);
        for (id, imp_rules) in agents_with_flat(imported) {
            let Some((_, rules)) = local_agents.iter().find(|(lid, _)| *lid == id) else {
                continue;
            };
            let denies: Vec<ToolPattern> = imp_rules
                .iter()
                .filter(|r| r.effect.value == Effect::DenyMandatory && r.is_unconditional())
                .filter_map(|r| ToolPattern::parse(&r.tool.value).ok())
                .collect();
            for rule in rules
                .iter()
                .filter(|r| matches!(r.effect.value, Effect::Permit | Effect::Defer))
            {
                let Ok(p) = ToolPattern::parse(&rule.tool.value) else {
                    continue;
                };
                if let Some(d) = denies.iter().find(|d| d.covers(&p)) {
                    self.diagnostics.extend(locate(
                        &from.file,
                        vec![
                            Diagnostic::new(
                                Code::ShadowedByMandatoryDeny,
                                format!("this rule can never fire: `deny! {}` in {} covers `{}`", d.as_str(), source.file.display, p.as_str()),
                            )
                            .at(rule.effect.span.to(rule.tool.span))
                            .label("unreachable")
                            .help("an imported `deny!` is tried before every local rule; remove this rule"),
                        ],
                    ));
                }
            }
        }
    }
}

fn agents_with_flat(p: &Policy) -> Vec<(&str, &[Rule])> {
    let mut out: Vec<(&str, &[Rule])> = p
        .agents
        .iter()
        .map(|a| (a.id.value.as_str(), a.rules.as_slice()))
        .collect();
    if !p.rules.is_empty() {
        out.push(("default", p.rules.as_slice()));
    }
    out
}

fn verify_signature(key: &str, sig: &str, message: &[u8]) -> Result<(), String> {
    let key_b64 = key
        .strip_prefix("ed25519:")
        .ok_or("the trust key is not `ed25519:…`")?;
    let key_bytes: [u8; 32] = BASE64
        .decode(key_b64)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("the trust key is not 32 bytes of base64")?;
    let sig_b64 = sig.strip_prefix("ed25519:").unwrap_or(sig);
    let sig_bytes: [u8; 64] = BASE64
        .decode(sig_b64)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or("the signature is not 64 bytes of base64")?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key_bytes)
        .map_err(|_| "the trust key is not a valid Ed25519 key")?;
    key.verify_strict(message, &ed25519_dalek::Signature::from_bytes(&sig_bytes))
        .map_err(|_| "the signature does not match the file".to_string())
}

/// Merges `imported` under `local`: a local agent, rule or key always wins.
pub fn merge_under(local: &mut Policy, imported: Policy) {
    if let Some(imp) = imported.runtime {
        match &mut local.runtime {
            Some(rt) => {
                for e in imp.entries {
                    if rt.get(&e.key.value).is_none() {
                        rt.entries.push(e);
                    }
                }
            }
            None => local.runtime = Some(imp),
        }
    }
    local.default = local.default.take().or(imported.default);
    merge_named(&mut local.providers, imported.providers);
    merge_named(&mut local.identities, imported.identities);
    merge_named(&mut local.selectors, imported.selectors);
    local.rules.extend(imported.rules);
    for agent in imported.agents {
        match local
            .agents
            .iter_mut()
            .find(|a| a.id.value == agent.id.value)
        {
            Some(mine) => merge_agent(mine, agent),
            None => local.agents.push(agent),
        }
    }
}

fn merge_named(local: &mut Vec<NamedBlock>, imported: Vec<NamedBlock>) {
    for b in imported {
        if !local.iter().any(|l| l.name.value == b.name.value) {
            local.push(b);
        }
    }
}

fn merge_agent(mine: &mut Agent, imported: Agent) {
    mine.default = mine.default.take().or(imported.default);
    mine.rules.extend(imported.rules);
    mine.rate_limits.extend(imported.rate_limits);
    mine.redact.extend(imported.redact);
    mine.costs.extend(imported.costs);
    for b in imported.budgets {
        if !mine
            .budgets
            .iter()
            .any(|m| m.window.value == b.window.value)
        {
            mine.budgets.push(b);
        }
    }
    mine.egress = mine.egress.take().or(imported.egress);
    merge_named(&mut mine.credentials, imported.credentials);
    mine.alerts.extend(imported.alerts);
}
