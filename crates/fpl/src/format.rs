//! AST → FPL text in one canonical layout.
//!
//! Statements appear in a fixed order (imports, runtime, providers, identities, selectors, trust,
//! flat rules, agents; inside an agent: default, rules, rate limits, redaction, costs, budgets,
//! egress, credentials, alerts). Rules never move relative to each other. Comments travel with
//! the statement they were written above or beside.

use crate::ast::*;
use crate::span::Meta;

/// A part of the output, printed in canonical order with blank lines between parts.
type Section<'a> = Box<dyn Fn(&mut Writer) + 'a>;

pub fn format_policy(policy: &Policy) -> String {
    let mut w = Writer::default();
    w.comments(&policy.meta.leading);
    if !policy.meta.leading.is_empty() {
        w.blank();
    }
    let mut sections: Vec<Section<'_>> = Vec::new();
    if !policy.imports.is_empty() {
        sections.push(Box::new(|w: &mut Writer| {
            for (i, import) in policy.imports.iter().enumerate() {
                w.node_start(&import.meta, i > 0);
                let mut line = format!("import {}", quote(&import.path.value));
                if let Some(alias) = &import.alias {
                    line.push_str(&format!(" as {}", word_or_quote(&alias.value)));
                }
                w.line_with(&line, &import.meta);
            }
        }));
    }
    if let Some(runtime) = &policy.runtime {
        sections.push(Box::new(move |w: &mut Writer| {
            w.block("runtime", &runtime.meta, &runtime.entries);
        }));
    }
    for (keyword, blocks) in [
        ("provider", &policy.providers),
        ("identity", &policy.identities),
        ("selector", &policy.selectors),
    ] {
        let expr_keys: &[&str] = if keyword == "selector" { &["key"] } else { &[] };
        for b in blocks {
            sections.push(Box::new(move |w: &mut Writer| {
                w.settings(
                    &format!("{keyword} {}", quote(&b.name.value)),
                    &b.meta,
                    &b.entries,
                    expr_keys,
                );
            }));
        }
    }
    if !policy.trust.is_empty() {
        sections.push(Box::new(|w: &mut Writer| {
            w.line("trust {");
            w.indent += 1;
            for (i, key) in policy.trust.iter().enumerate() {
                w.node_start(&key.meta, i > 0);
                let k = if key.key.value.starts_with("ed25519:") && is_trust_key(&key.key.value) {
                    key.key.value.clone()
                } else {
                    quote(&key.key.value)
                };
                w.line_with(
                    &format!("key {} {k}", quote(&key.registry.value)),
                    &key.meta,
                );
            }
            w.indent -= 1;
            w.line("}");
        }));
    }
    if let Some(d) = &policy.default {
        sections.push(Box::new(move |w: &mut Writer| {
            w.default_line(d.value, &policy.default_meta)
        }));
    }
    if !policy.rules.is_empty() {
        sections.push(Box::new(|w: &mut Writer| w.rules(&policy.rules)));
    }
    for agent in &policy.agents {
        sections.push(Box::new(move |w: &mut Writer| w.agent(agent)));
    }
    for (i, section) in sections.iter().enumerate() {
        if i > 0 {
            w.blank();
        }
        section(&mut w);
    }
    if !policy.meta.dangling.is_empty() {
        if !sections.is_empty() {
            w.blank();
        }
        w.comments(&policy.meta.dangling);
    }
    w.out
}

pub fn format_expr(e: &Expr) -> String {
    expr(e, 0)
}

pub fn format_value(v: &Value) -> String {
    value(v)
}

#[derive(Default)]
struct Writer {
    out: String,
    indent: usize,
}

impl Writer {
    fn line(&mut self, text: &str) {
        for _ in 0..self.indent {
            self.out.push_str("  ");
        }
        self.out.push_str(text);
        self.out.push('\n');
    }

    fn line_with(&mut self, text: &str, meta: &Meta) {
        match &meta.trailing {
            Some(c) => self.line(&format!("{text}  #{c}")),
            None => self.line(text),
        }
    }

    fn blank(&mut self) {
        if !self.out.is_empty() && !self.out.ends_with("\n\n") {
            self.out.push('\n');
        }
    }

    fn comments(&mut self, comments: &[String]) {
        for c in comments {
            self.line(&format!("#{c}"));
        }
    }

    /// Leading comments and the blank line the author put before a node (not before the first).
    fn node_start(&mut self, meta: &Meta, not_first: bool) {
        if not_first && meta.blank_before {
            self.blank();
        }
        self.comments(&meta.leading);
    }

    fn block(&mut self, header: &str, meta: &Meta, entries: &[Entry]) {
        self.settings(header, meta, entries, &[]);
    }

    /// A block whose keys in `expr_keys` always hold an expression (a selector's `key`), so
    /// their expressions need no parentheses.
    fn settings(&mut self, header: &str, meta: &Meta, entries: &[Entry], expr_keys: &[&str]) {
        self.comments(&meta.leading);
        if entries.is_empty() && meta.dangling.is_empty() {
            self.line_with(&format!("{header} {{}}"), meta);
            return;
        }
        self.line(&format!("{header} {{"));
        self.indent += 1;
        let width = entries
            .iter()
            .map(|e| key_text(&e.key.value).len())
            .max()
            .unwrap_or(0);
        for (i, e) in entries.iter().enumerate() {
            self.node_start(&e.meta, i > 0);
            let key = key_text(&e.key.value);
            let v = match &e.value.value {
                Value::Expr(x) if expr_keys.contains(&e.key.value.as_str()) => expr(x, 0),
                v => entry_value(&e.key.value, v),
            };
            self.line_with(&format!("{key:width$} = {v}"), &e.meta);
        }
        self.comments(&meta.dangling);
        self.indent -= 1;
        self.line_with("}", meta);
    }

    fn rules(&mut self, rules: &[Rule]) {
        // Align effects and patterns within each run of rules not broken by a blank line.
        let mut runs: Vec<&[Rule]> = Vec::new();
        let mut start = 0;
        for i in 1..=rules.len() {
            if i == rules.len() || rules[i].meta.blank_before {
                runs.push(&rules[start..i]);
                start = i;
            }
        }
        for (r, run) in runs.iter().enumerate() {
            if r > 0 {
                self.blank();
            }
            let effect_width = run
                .iter()
                .map(|r| r.effect.value.keyword().len())
                .max()
                .unwrap_or(0);
            let tool_width = run
                .iter()
                .filter(|r| has_clauses(r))
                .map(|r| pattern_text(&r.tool.value).len())
                .max()
                .unwrap_or(0);
            for rule in run.iter() {
                self.comments(&rule.meta.leading);
                let text = rule_text(rule, effect_width, tool_width);
                self.line_with(&text, &rule.meta);
            }
        }
    }

    fn default_line(&mut self, effect: Effect, meta: &Meta) {
        self.comments(&meta.leading);
        self.line_with(&format!("default {}", effect.keyword()), meta);
    }

    fn agent(&mut self, agent: &Agent) {
        self.comments(&agent.meta.leading);
        self.line(&format!("agent {} {{", quote(&agent.id.value)));
        self.indent += 1;
        let mut groups: Vec<Section<'_>> = Vec::new();
        if let Some(d) = &agent.default {
            groups.push(Box::new(move |w: &mut Writer| {
                w.default_line(d.value, &agent.default_meta)
            }));
        }
        if !agent.rules.is_empty()
            || !agent.rules_meta.dangling.is_empty()
            || !agent.rules_meta.leading.is_empty()
        {
            groups.push(Box::new(|w: &mut Writer| {
                w.comments(&agent.rules_meta.leading);
                w.line("rules {");
                w.indent += 1;
                w.rules(&agent.rules);
                w.comments(&agent.rules_meta.dangling);
                w.indent -= 1;
                w.line_with("}", &agent.rules_meta);
            }));
        }
        if !agent.rate_limits.is_empty() {
            groups.push(Box::new(|w: &mut Writer| {
                for (i, r) in agent.rate_limits.iter().enumerate() {
                    w.node_start(&r.meta, i > 0);
                    let scope = if r.per_session { " per session" } else { "" };
                    let text = format!(
                        "rate_limit {}: {} per {}{scope}",
                        quote(&r.tool.value),
                        r.limit.value,
                        r.per.value.word()
                    );
                    w.line_with(&text, &r.meta);
                }
            }));
        }
        if !agent.redact.is_empty() {
            groups.push(Box::new(|w: &mut Writer| {
                for (i, r) in agent.redact.iter().enumerate() {
                    w.node_start(&r.meta, i > 0);
                    let args: Vec<String> = r.args.iter().map(|a| quote(&a.value)).collect();
                    let text = format!(
                        "redact {} args: [{}]",
                        pattern_text(&r.tool.value),
                        args.join(", ")
                    );
                    w.line_with(&text, &r.meta);
                }
            }));
        }
        if !agent.costs.is_empty() {
            groups.push(Box::new(|w: &mut Writer| {
                for (i, c) in agent.costs.iter().enumerate() {
                    w.node_start(&c.meta, i > 0);
                    let text = format!(
                        "cost {}: {}",
                        pattern_text(&c.tool.value),
                        expr(&c.amount, 0)
                    );
                    w.line_with(&text, &c.meta);
                }
            }));
        }
        for b in &agent.budgets {
            groups.push(Box::new(move |w: &mut Writer| {
                w.block(
                    &format!("budget {}", b.window.value.word()),
                    &b.meta,
                    &b.entries,
                );
            }));
        }
        if let Some(e) = &agent.egress {
            groups.push(Box::new(move |w: &mut Writer| {
                w.block("egress", &e.meta, &e.entries)
            }));
        }
        for c in &agent.credentials {
            groups.push(Box::new(move |w: &mut Writer| {
                w.block(
                    &format!("credential {}", word_or_quote(&c.name.value)),
                    &c.meta,
                    &c.entries,
                );
            }));
        }
        for a in &agent.alerts {
            groups.push(Box::new(move |w: &mut Writer| {
                w.block("alert", &a.meta, &a.entries)
            }));
        }
        for (i, g) in groups.iter().enumerate() {
            if i > 0 {
                self.blank();
            }
            g(self);
        }
        self.comments(&agent.meta.dangling);
        self.indent -= 1;
        self.line_with("}", &agent.meta);
    }
}

fn has_clauses(r: &Rule) -> bool {
    !r.is_unconditional() || r.reason.is_some() || r.notify.is_some()
}

fn rule_text(rule: &Rule, effect_width: usize, tool_width: usize) -> String {
    let mut text = format!("{:effect_width$} ", rule.effect.value.keyword());
    let tool = pattern_text(&rule.tool.value);
    if !has_clauses(rule) {
        text.push_str(&tool);
        return text;
    }
    text.push_str(&format!("{tool:tool_width$}"));
    if let Some(m) = &rule.method {
        text.push_str(&format!(" method {}", word_or_quote(&m.value)));
    }
    if let Some(h) = &rule.host {
        text.push_str(&format!(" host {}", quote(&h.value)));
    }
    if let Some(p) = &rule.path {
        text.push_str(&format!(" path {}", quote(&p.value)));
    }
    if let Some(c) = &rule.condition {
        text.push_str(&format!(" if {}", expr(c, 0)));
    }
    if let Some(r) = &rule.reason {
        text.push_str(&format!(" reason {}", quote(&r.value)));
    }
    if let Some(n) = &rule.notify {
        text.push_str(&format!(" notify {}", quote(&n.value)));
    }
    text
}

/// Words the parser reads as something other than a bare name.
const RESERVED: &[&str] = &[
    "true",
    "false",
    "null",
    "nil",
    "and",
    "or",
    "not",
    "in",
    "matches",
    "contains",
    "starts_with",
    "ends_with",
    "if",
    "when",
    "reason",
    "notify",
    "method",
    "host",
    "path",
    "port",
    "query",
    "header",
    "headers",
    "as",
    "per",
    "env",
];

fn is_bare_word(s: &str) -> bool {
    let mut chars = s.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_alphabetic() || first == '_' || first == '*')
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '*' | '/' | '.' | '-'))
        && !RESERVED.contains(&s)
        && !(s == "ed25519" || s.starts_with("ed25519:"))
}

fn is_trust_key(s: &str) -> bool {
    s["ed25519:".len()..]
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '-' | '_'))
}

fn word_or_quote(s: &str) -> String {
    if is_bare_word(s) {
        s.to_string()
    } else {
        quote(s)
    }
}

fn pattern_text(s: &str) -> String {
    word_or_quote(s)
}

/// Keys are read as plain words, so only literal keywords need quotes.
fn key_text(s: &str) -> String {
    let plain = s
        .chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
        && s.chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !matches!(s, "true" | "false" | "null" | "nil");
    if plain { s.to_string() } else { quote(s) }
}

pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `on_exceed deny` reads better bare; every other string value is quoted.
fn entry_value(key: &str, v: &Value) -> String {
    match v {
        Value::Lit(Literal::Str(s)) if key == "on_exceed" && is_bare_word(s) => s.clone(),
        _ => value(v),
    }
}

fn value(v: &Value) -> String {
    match v {
        Value::Lit(l) => literal(l),
        Value::List(items) => {
            let parts: Vec<String> = items.iter().map(|i| value(&i.value)).collect();
            format!("[{}]", parts.join(", "))
        }
        Value::Env(name) => format!("env({})", quote(name)),
        // A bare word is a string and `env(…)` an env reference, so only a call reads back as
        // an expression unaided; anything else goes in parentheses.
        Value::Expr(e) => match &e.kind {
            ExprKind::Call { func, .. } if func.value != "env" => expr(e, 0),
            _ => format!("({})", expr(e, 0)),
        },
    }
}

pub fn literal(l: &Literal) -> String {
    match l {
        Literal::Str(s) => quote(s),
        // `1.50` and `1.5` are one number; JSON and YAML keep only the value.
        Literal::Number(n) => n.normalize().to_string(),
        Literal::Money(m) => format!("${m}"),
        Literal::Duration(d) => format!("{}{}", d.amount, d.unit.suffix()),
        Literal::Size(s) => format!("{}{}", s.amount, s.unit.suffix()),
        Literal::Bool(b) => b.to_string(),
        Literal::Null => "null".into(),
    }
}

/// Prints `e`, adding parentheses only where the context's binding power needs them.
fn expr(e: &Expr, context: u8) -> String {
    match &e.kind {
        ExprKind::Literal(l) => literal(l),
        ExprKind::Path(segments) => segments.join("."),
        ExprKind::List(items) => {
            let parts: Vec<String> = items.iter().map(|i| expr(i, 0)).collect();
            format!("[{}]", parts.join(", "))
        }
        ExprKind::Call { func, args } => {
            let parts: Vec<String> = args.iter().map(|a| expr(a, 0)).collect();
            format!("{}({})", func.value, parts.join(", "))
        }
        ExprKind::Not(inner) => wrap(
            format!("not {}", expr(inner, NOT_PRECEDENCE)),
            NOT_PRECEDENCE < context,
        ),
        ExprKind::Binary { op, lhs, rhs } => {
            let prec = op.precedence();
            let (l, r) = if op.is_comparison() {
                (expr(lhs, prec + 1), expr(rhs, prec + 1))
            } else {
                (expr(lhs, prec), expr(rhs, prec + 1))
            };
            wrap(format!("{l} {} {r}", op.symbol()), prec < context)
        }
    }
}

fn wrap(s: String, parens: bool) -> String {
    if parens { format!("({s})") } else { s }
}
