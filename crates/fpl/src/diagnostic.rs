//! Diagnostics: what is wrong, where, and how to fix it — as text (through miette) or JSON.

use std::fmt;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, SourceSpan};
use serde::Serialize;

use crate::span::{Span, line_col};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Warning,
    Error,
}

macro_rules! codes {
    ($($variant:ident = $code:literal, $sev:ident, $summary:literal;)*) => {
        /// Every diagnostic FPL can emit. Codes are stable: never renumber, never reuse.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Code { $($variant),* }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$variant),*];

            pub fn as_str(self) -> &'static str {
                match self { $(Code::$variant => $code),* }
            }

            pub fn severity(self) -> Severity {
                match self { $(Code::$variant => Severity::$sev),* }
            }

            /// One line saying what the code is about (used in docs and `--format json`).
            pub fn summary(self) -> &'static str {
                match self { $(Code::$variant => $summary),* }
            }
        }
    };
}

codes! {
    // Input
    BadInput = "FPL001", Error, "the file is not valid UTF-8 text, contains NUL bytes, or is too large";
    Io = "FPL002", Error, "a file could not be read";
    // Lexical
    UnterminatedString = "FPL101", Error, "a string literal is not closed on its line";
    BadEscape = "FPL102", Warning, "an unknown escape sequence in a string";
    BadNumber = "FPL103", Error, "a number, duration or size literal is malformed";
    BadMoney = "FPL104", Error, "a money literal is malformed";
        UnexpectedChar = "FPL105", Error, "a character that cannot start any token";
    BadUnicodeEscape = "FPL106", Error, "a `\\u{…}` escape does not name a character";
    // Syntax
    Expected = "FPL201", Error, "the parser expected something else here";
    UnknownEffect = "FPL202", Error, "a rule starts with a word that is not an effect";
    UnknownStatement = "FPL203", Error, "an unknown block or statement";
    Unclosed = "FPL204", Error, "a bracket, brace or parenthesis is not closed";
    ChainedComparison = "FPL205", Error, "comparisons do not chain";
    TooDeep = "FPL206", Error, "nesting is deeper than FPL allows";
    DuplicateClause = "FPL207", Error, "a clause or statement is given twice";
    BadYamlJson = "FPL208", Error, "a YAML or JSON policy does not have the policy's shape";
    // Blocks and keys
    UnknownKey = "FPL301", Error, "an unknown key in a block";
    DuplicateKey = "FPL302", Error, "a key is set twice in one block";
    BadValue = "FPL303", Error, "a key has a value of the wrong type or out of range";
    MissingKey = "FPL304", Error, "a block lacks a key it needs";
    // Imports
    UnpinnedImport = "FPL401", Error, "an import without an exact version";
    ImportNotFound = "FPL402", Error, "an import could not be resolved";
    UnsignedImport = "FPL403", Warning, "an import is not verified by a trust key";
        ImportCycle = "FPL404", Error, "imports form a cycle";
    ImportUnverified = "FPL405", Error, "an import fails its registry's trust key";
    // Names
    DuplicateAgent = "FPL501", Error, "two agents have the same id";
    UnknownFunction = "FPL502", Error, "a call to a function FPL does not have";
    UnknownSelector = "FPL503", Warning, "a name that looks like a misspelt selector";
    DuplicateName = "FPL504", Error, "two providers, identities, selectors or credentials share a name";
    UndeclaredProvider = "FPL505", Warning, "a provider is referenced but not declared";
    UnsetEnv = "FPL506", Warning, "an env() variable is not set";
    BadAgentId = "FPL507", Error, "an agent id holds `|` or a control character";
    // Types and values
    BadRegex = "FPL601", Error, "a regular expression does not compile";
    TypeMismatch = "FPL602", Error, "an operator is applied to values of the wrong type";
    BadPattern = "FPL603", Error, "a tool pattern is malformed";
    // Policy shape
    ShadowedByMandatoryDeny = "FPL701", Error, "a rule can never fire: a deny! covers it";
    ShadowedByEarlierRule = "FPL702", Error, "a rule can never fire: an earlier unconditional rule covers it";
        InlineSecret = "FPL703", Error, "a secret is written inline in the policy";
    MissingDefault = "FPL704", Warning, "an agent has no `default`, so it denies when nothing matches";
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Lines longer than this are not shown as an excerpt.
const MAX_EXCERPT_LINE: usize = 500;

/// One finding about a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub code: Code,
    pub severity: Severity,
    pub message: String,
    pub span: Option<Span>,
    pub label: Option<String>,
    pub help: Option<String>,
}

impl Diagnostic {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Diagnostic {
            code,
            severity: code.severity(),
            message: message.into(),
            span: None,
            label: None,
            help: None,
        }
    }

    pub fn at(mut self, span: Span) -> Self {
        self.span = Some(span);
        self
    }

    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }

    /// For an unknown word: "did you mean" joins the message when a candidate is close, and the
    /// help lists every valid choice.
    pub fn suggest(mut self, word: &str, candidates: &[&str], what: &str) -> Self {
        if let Some(c) = did_you_mean(word, candidates.iter().copied()) {
            self.message = format!("{}; did you mean `{c}`?", self.message);
        }
        self.help(format!("{what}: {}", candidates.join(", ")))
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

/// A diagnostic tied to the file it is about.
#[derive(Debug, Clone)]
pub struct FileDiagnostic {
    pub file: String,
    pub source: std::sync::Arc<String>,
    pub diagnostic: Diagnostic,
}

impl FileDiagnostic {
    /// 1-based line and column, if the diagnostic points into the source.
    pub fn line_col(&self) -> Option<(usize, usize)> {
        self.diagnostic
            .span
            .map(|s| line_col(&self.source, s.start))
    }

    /// `file:line:col: severity[CODE]: message`, then the excerpt, label and help.
    pub fn render(&self, color: bool) -> String {
        let d = &self.diagnostic;
        let sev = match d.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        let location = match self.line_col() {
            Some((line, col)) => format!("{}:{line}:{col}", self.file),
            None => self.file.clone(),
        };
        let mut out = format!("{location}: {sev}[{}]: {}\n", d.code, d.message);
        // Excerpts of very long lines help nobody (and overflow miette's layout).
        let excerpt_fits = d.span.is_some_and(|s| {
            let start = s.start.min(self.source.len());
            let line_start = self.source[..start].rfind('\n').map_or(0, |i| i + 1);
            let line_end = self.source[start..]
                .find('\n')
                .map_or(self.source.len(), |i| start + i);
            line_end - line_start <= MAX_EXCERPT_LINE
        });
        if !excerpt_fits {
            if let Some(label) = &d.label {
                out.push_str(&format!("  note: {label}\n"));
            }
            if let Some(help) = &d.help {
                out.push_str(&format!("  help: {help}\n"));
            }
            return out;
        }
        let theme = if color {
            GraphicalTheme::unicode()
        } else {
            GraphicalTheme::unicode_nocolor()
        };
        let handler = GraphicalReportHandler::new_themed(theme)
            .with_context_lines(1)
            .without_cause_chain();
        let mut excerpt = String::new();
        if handler
            .render_report(&mut excerpt, &MietteView(self))
            .is_ok()
        {
            // miette repeats the message above the excerpt; the header line already says it.
            let mut lines = excerpt.lines().skip_while(|l| !l.contains('╭')).peekable();
            while let Some(line) = lines.next() {
                out.push_str(line);
                out.push('\n');
                if lines.peek().is_none() {
                    break;
                }
            }
        }
        out
    }

    pub fn to_json(&self) -> serde_json::Value {
        let d = &self.diagnostic;
        let (line, column) = self.line_col().unzip();
        let (end_line, end_column) = d.span.map(|s| line_col(&self.source, s.end)).unzip();
        serde_json::json!({
            "file": self.file,
            "severity": d.severity,
            "code": d.code.as_str(),
            "message": d.message,
            "line": line,
            "column": column,
            "end_line": end_line,
            "end_column": end_column,
            "label": d.label,
            "help": d.help,
        })
    }
}

/// Adapts a [`FileDiagnostic`] to miette's renderer.
struct MietteView<'a>(&'a FileDiagnostic);

impl fmt::Debug for MietteView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.diagnostic.message)
    }
}

impl fmt::Display for MietteView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.diagnostic.message)
    }
}

impl std::error::Error for MietteView<'_> {}

impl miette::Diagnostic for MietteView<'_> {
    fn severity(&self) -> Option<miette::Severity> {
        Some(match self.0.diagnostic.severity {
            Severity::Error => miette::Severity::Error,
            Severity::Warning => miette::Severity::Warning,
        })
    }

    fn help<'b>(&'b self) -> Option<Box<dyn fmt::Display + 'b>> {
        self.0
            .diagnostic
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        self.0
            .diagnostic
            .span
            .map(|_| &*self.0.source as &dyn miette::SourceCode)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        let d = &self.0.diagnostic;
        let span = d.span?;
        let len = span
            .len()
            .min(self.0.source.len().saturating_sub(span.start));
        let label =
            LabeledSpan::new_with_span(d.label.clone(), SourceSpan::new(span.start.into(), len));
        Some(Box::new(std::iter::once(label)))
    }
}

/// Closest candidate within a small edit distance, for "did you mean …?".
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let word_lower = word.to_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(&word_lower, c), c))
        .filter(|(d, c)| {
            let allowed = match c.chars().count() {
                0..=3 => 1,
                4..=6 => 2,
                _ => 3,
            };
            *d > 0 && *d <= allowed
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// `did you mean `x`?` when a candidate is close, else the list of valid choices.
pub fn suggestion(word: &str, candidates: &[&str], what: &str) -> String {
    match did_you_mean(word, candidates.iter().copied()) {
        Some(c) => format!("did you mean `{c}`?"),
        None => format!("{what}: {}", candidates.join(", ")),
    }
}
