//! Tokens → AST. Recursive descent for statements, Pratt for conditions.
//!
//! Errors never stop the parse: a broken statement is reported, skipped to the end of its line
//! (or its balanced block), and parsing resumes, so one run reports every error in a file.

use crate::ast::*;
use crate::diagnostic::{Code, Diagnostic};
use crate::lexer::{Comment, Tok, Token, lex};
use crate::span::{Meta, Span};

/// How deep parentheses, `not`s and lists may nest before the parser gives up on a statement.
pub const MAX_DEPTH: usize = 64;

const TOP_LEVEL: &[&str] = &[
    "import", "runtime", "provider", "identity", "selector", "trust", "agent", "permit", "allow",
    "deny", "block", "reject", "defer",
];
const AGENT_BODY: &[&str] = &[
    "default",
    "rules",
    "rate_limit",
    "redact",
    "cost",
    "budget",
    "egress",
    "credential",
    "alert",
];
const EFFECT_WORDS: &[&str] = &[
    "permit", "allow", "approve", "deny", "deny!", "block", "reject", "defer",
];
const CLAUSES: &[&str] = &["if", "when", "reason", "notify", "method", "host", "path"];

/// The result of parsing one file: the AST (with whatever could be recovered) and every error.
#[derive(Debug, Default)]
pub struct Parsed {
    pub policy: Policy,
    pub diagnostics: Vec<Diagnostic>,
}

pub fn parse(src: &str) -> Parsed {
    let lexed = lex(src);
    let mut p = Parser {
        src,
        tokens: lexed.tokens,
        pos: 0,
        comments: lexed.comments,
        next_comment: 0,
        diags: lexed.diagnostics,
        depth: 0,
    };
    let policy = p.policy();
    let mut diagnostics = p.diags;
    diagnostics.sort_by_key(|d| d.span.map(|s| s.start));
    Parsed {
        policy,
        diagnostics,
    }
}

/// Parses a condition or cost expression on its own (used for YAML/JSON policies).
pub fn parse_expr(src: &str) -> Result<Expr, Vec<Diagnostic>> {
    let lexed = lex(src);
    let mut p = Parser {
        src,
        tokens: lexed.tokens,
        pos: 0,
        comments: lexed.comments,
        next_comment: 0,
        diags: lexed.diagnostics,
        depth: 0,
    };
    p.skip_newlines();
    let expr = p.expr(0);
    p.skip_newlines();
    if expr.is_ok() && *p.peek() != Tok::Eof {
        let t = p.token().clone();
        p.error(
            Diagnostic::new(
                Code::Expected,
                format!("unexpected {} after the expression", t.tok.describe()),
            )
            .at(t.span),
        );
    }
    match expr {
        Ok(e) if p.diags.iter().all(|d| !d.is_error()) => Ok(e),
        _ => Err(p.diags),
    }
}

/// The statement was reported and must be skipped.
#[derive(Debug)]
struct Abort;

type PResult<T> = Result<T, Abort>;

struct Parser<'a> {
    src: &'a str,
    tokens: Vec<Token>,
    pos: usize,
    comments: Vec<Comment>,
    next_comment: usize,
    diags: Vec<Diagnostic>,
    depth: usize,
}

impl Parser<'_> {
    // ---- token plumbing ----

    fn token(&self) -> &Token {
        // The token list always ends with Eof, and `advance` never moves past it.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn peek(&self) -> &Tok {
        &self.token().tok
    }

    fn peek_nth(&self, n: usize) -> &Tok {
        &self.tokens[(self.pos + n).min(self.tokens.len() - 1)].tok
    }

    fn span(&self) -> Span {
        self.token().span
    }

    /// Where the last statement's code ended (before any newline or `;` that closed it).
    fn prev_end(&self) -> usize {
        let mut i = self.pos;
        while i > 0 {
            i -= 1;
            if !matches!(self.tokens[i].tok, Tok::Newline | Tok::Semi) {
                return self.tokens[i].span.end;
            }
        }
        0
    }

    fn advance(&mut self) -> Token {
        let t = self.token().clone();
        if self.pos < self.tokens.len() - 1 {
            self.pos += 1;
        }
        t
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek() == tok {
            self.advance();
            true
        } else {
            false
        }
    }

    fn at_word(&self, w: &str) -> bool {
        self.peek().is_word(w)
    }

    fn word(&self) -> Option<&str> {
        match self.peek() {
            Tok::Word(w) => Some(w),
            _ => None,
        }
    }

    fn skip_newlines(&mut self) {
        while *self.peek() == Tok::Newline {
            self.advance();
        }
    }

    fn skip_separators(&mut self) {
        while matches!(self.peek(), Tok::Newline | Tok::Semi) {
            self.advance();
        }
    }

    /// The first token after any newlines.
    fn peek_past_newlines(&self) -> &Tok {
        let mut i = 0;
        while *self.peek_nth(i) == Tok::Newline {
            i += 1;
        }
        self.peek_nth(i)
    }

    fn error(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn fail<T>(&mut self, d: Diagnostic) -> PResult<T> {
        self.error(d);
        Err(Abort)
    }

    fn unexpected<T>(&mut self, expected: &str) -> PResult<T> {
        let t = self.token().clone();
        self.fail(
            Diagnostic::new(
                Code::Expected,
                format!("expected {expected}, found {}", t.tok.describe()),
            )
            .at(t.span)
            .label(format!("expected {expected}")),
        )
    }

    fn expect(&mut self, tok: Tok, expected: &str) -> PResult<Span> {
        if *self.peek() == tok {
            Ok(self.advance().span)
        } else {
            self.unexpected(expected)
        }
    }

    /// After a statement: the end of the line, a `;`, or the `}` that closes the block.
    fn end_of_statement(&mut self) -> PResult<()> {
        match self.peek() {
            Tok::Newline | Tok::Semi => {
                self.advance();
                Ok(())
            }
            Tok::RBrace | Tok::Eof => Ok(()),
            _ => self.unexpected("the end of the statement (a new line or `;`)"),
        }
    }

    /// Skips the rest of a broken statement: to the end of its line, stepping over balanced
    /// brackets, and never past the `}` that closes the enclosing block.
    fn recover(&mut self) {
        // The aborted statement may have left nesting levels open.
        self.depth = 0;
        let mut depth = 0usize;
        loop {
            match self.peek() {
                Tok::Eof => return,
                Tok::Newline | Tok::Semi if depth == 0 => {
                    self.advance();
                    return;
                }
                Tok::RBrace | Tok::RParen | Tok::RBracket if depth == 0 => {
                    if *self.peek() == Tok::RBrace {
                        return;
                    }
                    self.advance();
                }
                Tok::LBrace | Tok::LParen | Tok::LBracket => {
                    depth += 1;
                    self.advance();
                }
                Tok::RBrace | Tok::RParen | Tok::RBracket => {
                    depth -= 1;
                    self.advance();
                    if depth == 0 && self.tokens[self.pos - 1].tok == Tok::RBrace {
                        // A skipped block ends the statement.
                        if matches!(self.peek(), Tok::Newline | Tok::Semi) {
                            self.advance();
                        }
                        return;
                    }
                }
                _ => {
                    self.advance();
                }
            }
        }
    }

    // ---- comments and layout ----

    /// Starts a line-level node at the current token: claims the comments above it.
    fn meta_here(&mut self) -> Meta {
        let start = self.span().start;
        let mut leading = Vec::new();
        let mut first = start;
        while let Some(c) = self.comments.get(self.next_comment) {
            if c.span.start >= start {
                break;
            }
            first = first.min(c.span.start);
            leading.push(c.text.clone());
            self.next_comment += 1;
        }
        Meta {
            span: Span::new(start, start),
            leading,
            blank_before: self.blank_line_before(first),
            ..Meta::default()
        }
    }

    fn blank_line_before(&self, pos: usize) -> bool {
        let before = &self.src[..pos.min(self.src.len())];
        let gap_start = before.trim_end().len();
        gap_start > 0 && before[gap_start..].matches('\n').count() >= 2
    }

    /// Ends a line-level node: records its span and claims a comment on its last line.
    fn finish(&mut self, meta: &mut Meta) {
        let end = self.prev_end();
        meta.span = Span::new(meta.span.start, end.max(meta.span.start));
        if let Some(c) = self.comments.get(self.next_comment)
            && c.trailing
            && !self.src[end.min(c.span.start)..c.span.start].contains('\n')
        {
            meta.trailing = Some(c.text.clone());
            self.next_comment += 1;
        }
    }

    /// The file's header: the comments before the first statement, up to the last blank line
    /// among them (the comments after it belong to the first statement).
    fn header(&mut self) -> Vec<String> {
        let start = self.span().start;
        let mut end = self.next_comment;
        while end < self.comments.len() && self.comments[end].span.start < start {
            end += 1;
        }
        let mut split = self.next_comment;
        for i in self.next_comment..end {
            let next = self
                .comments
                .get(i + 1)
                .filter(|_| i + 1 < end)
                .map_or(start, |c| c.span.start);
            let gap = &self.src[self.comments[i].span.end..next];
            if gap.matches('\n').count() >= 2 {
                split = i + 1;
            }
        }
        let header = self.comments[self.next_comment..split]
            .iter()
            .map(|c| c.text.clone())
            .collect();
        self.next_comment = split;
        header
    }

    /// Comments before the `}` at the current token belong to the block as dangling comments.
    fn dangling(&mut self) -> Vec<String> {
        let start = self.span().start;
        let mut out = Vec::new();
        while let Some(c) = self.comments.get(self.next_comment) {
            if c.span.start >= start {
                break;
            }
            out.push(c.text.clone());
            self.next_comment += 1;
        }
        out
    }

    // ---- top level ----

    fn policy(&mut self) -> Policy {
        let mut policy = Policy::default();
        self.skip_separators();
        // Comments above the first statement describe the file: they stay at its top even when
        // the formatter moves statements into canonical order.
        policy.meta.leading = self.header();
        loop {
            self.skip_separators();
            if *self.peek() == Tok::Eof {
                break;
            }
            if self.top_item(&mut policy).is_err() {
                self.recover();
            }
        }
        policy.meta.dangling = self.dangling();
        policy
    }

    fn top_item(&mut self, policy: &mut Policy) -> PResult<()> {
        let Some(word) = self.word().map(str::to_string) else {
            if *self.peek() == Tok::RBrace {
                let span = self.advance().span;
                return self.fail(
                    Diagnostic::new(
                        Code::Unclosed,
                        "unexpected `}`: there is no open block to close",
                    )
                    .at(span)
                    .help("remove this `}` or add the `{` it should close"),
                );
            }
            return self.unexpected("a statement such as `agent \"id\" {` or `runtime {`");
        };
        match word.as_str() {
            "import" => {
                let import = self.import()?;
                policy.imports.push(import);
            }
            "runtime" => {
                let meta = self.meta_here();
                self.advance();
                let block = self.block(meta)?;
                match &mut policy.runtime {
                    Some(existing) => existing.entries.extend(block.entries),
                    None => policy.runtime = Some(block),
                }
            }
            "provider" | "identity" | "selector" => {
                let block = self.named_block(&word)?;
                match word.as_str() {
                    "provider" => policy.providers.push(block),
                    "identity" => policy.identities.push(block),
                    _ => policy.selectors.push(block),
                }
            }
            "trust" => self.trust(&mut policy.trust)?,
            "default" => self.default_statement(&mut policy.default, &mut policy.default_meta)?,
            "agent" => {
                let agent = self.agent()?;
                policy.agents.push(agent);
            }
            w if is_effect_word(w) => {
                let rule = self.rule()?;
                policy.rules.push(rule);
            }
            w => {
                let span = self.span();
                let mut d =
                    Diagnostic::new(Code::UnknownStatement, format!("unknown statement `{w}`"))
                        .at(span)
                        .label("not a top-level statement");
                d = if AGENT_BODY.contains(&w) {
                    d.help(format!(
                        "`{w}` belongs inside an `agent \"id\" {{ … }}` block"
                    ))
                } else {
                    d.suggest(w, TOP_LEVEL, "a file holds")
                };
                return self.fail(d);
            }
        }
        Ok(())
    }

    fn string_or_word(&mut self, what: &str) -> PResult<Spanned<String>> {
        let t = self.token().clone();
        match t.tok {
            Tok::Lit(Literal::Str(s)) | Tok::Word(s) => {
                self.advance();
                Ok(Spanned::new(s, t.span))
            }
            _ => self.unexpected(what),
        }
    }

    fn string(&mut self, what: &str) -> PResult<Spanned<String>> {
        let t = self.token().clone();
        match t.tok {
            Tok::Lit(Literal::Str(s)) => {
                self.advance();
                Ok(Spanned::new(s, t.span))
            }
            _ => self.unexpected(what),
        }
    }

    fn import(&mut self) -> PResult<Import> {
        let mut meta = self.meta_here();
        self.advance();
        let path = self
            .string("the import path in quotes, e.g. `\"github.com/org/repo/kind/name@1.0.0\"`")?;
        let alias = if self.at_word("as") {
            self.advance();
            Some(self.string_or_word("an alias name after `as`")?)
        } else {
            None
        };
        self.end_of_statement()?;
        self.finish(&mut meta);
        Ok(Import { meta, path, alias })
    }

    fn trust(&mut self, keys: &mut Vec<TrustKey>) -> PResult<()> {
        self.advance();
        let open = self.expect(Tok::LBrace, "`{` after `trust`")?;
        loop {
            self.skip_separators();
            match self.peek() {
                Tok::RBrace => {
                    self.advance();
                    return self.end_of_statement();
                }
                Tok::Eof => return self.unclosed(open, "trust"),
                _ => {}
            }
            let mut meta = self.meta_here();
            let entry = (|| {
                if !self.at_word("key") {
                    return self.unexpected("`key \"<registry>\" ed25519:<base64>`");
                }
                self.advance();
                let registry = self.string("the registry in quotes")?;
                let key = self.string_or_word("the key, written `ed25519:<base64>`")?;
                self.end_of_statement()?;
                Ok((registry, key))
            })();
            match entry {
                Ok((registry, key)) => {
                    self.finish(&mut meta);
                    keys.push(TrustKey {
                        meta,
                        registry,
                        key,
                    });
                }
                Err(Abort) => self.recover(),
            }
        }
    }

    fn unclosed<T>(&mut self, open: Span, what: &str) -> PResult<T> {
        self.fail(
            Diagnostic::new(
                Code::Unclosed,
                format!("the `{{` of this {what} block is never closed"),
            )
            .at(open)
            .label("opened here")
            .help("add the matching `}`"),
        )
    }

    // ---- blocks of key = value ----

    /// `{ key = value … }`; the keyword before it is already consumed.
    fn block(&mut self, meta: Meta) -> PResult<Block> {
        let (entries, mut meta) = self.entries(meta, &[])?;
        self.finish(&mut meta);
        Ok(Block { meta, entries })
    }

    fn named_block(&mut self, keyword: &str) -> PResult<NamedBlock> {
        let meta = self.meta_here();
        self.advance();
        let name = self.string_or_word(&format!(
            "the {keyword}'s name, e.g. `{keyword} \"name\" {{`"
        ))?;
        // A selector's `key` is an expression over the call, even when it is one bare name.
        let expr_keys: &[&str] = if keyword == "selector" { &["key"] } else { &[] };
        let (entries, mut meta) = self.entries(meta, expr_keys)?;
        self.finish(&mut meta);
        Ok(NamedBlock {
            meta,
            name,
            entries,
        })
    }

    /// The settings of a block; the keys in `expr_keys` take an expression.
    fn entries(&mut self, mut meta: Meta, expr_keys: &[&str]) -> PResult<(Vec<Entry>, Meta)> {
        let open = self.expect(Tok::LBrace, "`{`")?;
        let mut entries = Vec::new();
        loop {
            self.skip_separators();
            match self.peek() {
                Tok::RBrace => {
                    meta.dangling = self.dangling();
                    self.advance();
                    self.end_of_statement()?;
                    return Ok((entries, meta));
                }
                Tok::Eof => return self.unclosed(open, "settings"),
                _ => {}
            }
            match self.entry(expr_keys) {
                Ok(e) => entries.push(e),
                Err(Abort) => self.recover(),
            }
        }
    }

    fn entry(&mut self, expr_keys: &[&str]) -> PResult<Entry> {
        let mut meta = self.meta_here();
        let key = self.string_or_word("a setting name, like `mode = \"enforce\"`")?;
        if matches!(self.peek(), Tok::Assign | Tok::Colon) {
            self.advance();
        }
        if expr_keys.contains(&key.value.as_str()) {
            let e = self.expr(0)?;
            let span = e.span;
            self.end_of_statement()?;
            self.finish(&mut meta);
            return Ok(Entry {
                meta,
                key,
                value: Spanned::new(Value::Expr(e), span),
            });
        }
        let first = self.value()?;
        // `scope refund read_charge`: several bare values on one line form a list.
        let value = if self.another_value() {
            let mut items = vec![first];
            while self.another_value() {
                items.push(self.value()?);
            }
            let span = items[0].span.to(items[items.len() - 1].span);
            Spanned::new(Value::List(items), span)
        } else {
            first
        };
        // `alert { on = "deny" notify = "…" }`: the next `key =` starts a new entry.
        if !self.at_key() {
            self.end_of_statement()?;
        }
        self.finish(&mut meta);
        Ok(Entry { meta, key, value })
    }

    fn at_key(&self) -> bool {
        matches!(self.peek(), Tok::Word(_)) && matches!(self.peek_nth(1), Tok::Assign | Tok::Colon)
    }

    fn another_value(&self) -> bool {
        matches!(self.peek(), Tok::Word(_) | Tok::Lit(_)) && !self.at_key()
    }

    fn value(&mut self) -> PResult<Spanned<Value>> {
        let t = self.token().clone();
        match t.tok {
            Tok::Lit(lit) => {
                self.advance();
                Ok(Spanned::new(Value::Lit(lit), t.span))
            }
            Tok::Word(w) if w == "env" && *self.peek_nth(1) == Tok::LParen => {
                self.advance();
                self.advance();
                let name =
                    self.string("the variable name in quotes, e.g. `env(\"STRIPE_KEY\")`")?;
                let close = self.expect(Tok::RParen, "`)` to close `env(`")?;
                Ok(Spanned::new(Value::Env(name.value), t.span.to(close)))
            }
            Tok::Word(_) if *self.peek_nth(1) == Tok::LParen => self.expr_value(),
            Tok::LParen => self.expr_value(),
            Tok::Word(w) => {
                self.advance();
                Ok(Spanned::new(Value::Lit(Literal::Str(w)), t.span))
            }
            Tok::LBracket => {
                self.enter()?;
                self.advance();
                let mut items = Vec::new();
                let close = loop {
                    self.skip_newlines();
                    if *self.peek() == Tok::RBracket {
                        break self.advance().span;
                    }
                    if *self.peek() == Tok::Eof {
                        return self.fail(
                            Diagnostic::new(Code::Unclosed, "this `[` is never closed")
                                .at(t.span)
                                .help("add the matching `]`"),
                        );
                    }
                    items.push(self.value()?);
                    self.skip_newlines();
                    if !self.eat(&Tok::Comma) && *self.peek() != Tok::RBracket {
                        return self.unexpected("`,` or `]` in the list");
                    }
                };
                self.depth -= 1;
                Ok(Spanned::new(Value::List(items), t.span.to(close)))
            }
            _ => self
                .unexpected("a value: a string, number, money, duration, list or `env(\"NAME\")`"),
        }
    }

    /// `lower(email)` or `(a == b)`: an expression where a value goes.
    fn expr_value(&mut self) -> PResult<Spanned<Value>> {
        let e = self.expr(0)?;
        let span = e.span;
        Ok(Spanned::new(Value::Expr(e), span))
    }

    fn enter(&mut self) -> PResult<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            let span = self.span();
            return self.fail(
                Diagnostic::new(
                    Code::TooDeep,
                    format!("nesting deeper than {MAX_DEPTH} levels"),
                )
                .at(span)
                .help("simplify the expression; FPL limits nesting so evaluation stays bounded"),
            );
        }
        Ok(())
    }

    // ---- agents ----

    fn agent(&mut self) -> PResult<Agent> {
        let mut meta = self.meta_here();
        let keyword = self.advance().span;
        let id = match self.peek().clone() {
            Tok::Lit(Literal::Str(s)) | Tok::Word(s) => Spanned::new(s, self.advance().span),
            Tok::LBrace => {
                // Report, then read the body anyway so its own errors are found too.
                self.error(
                    Diagnostic::new(Code::Expected, "this agent has no id")
                        .at(keyword.to(self.span()))
                        .label("expected the agent's id before `{`")
                        .help("name the agent: `agent \"support-bot\" {`"),
                );
                Spanned::new(String::new(), keyword)
            }
            _ => {
                return self.unexpected("the agent's id in quotes, e.g. `agent \"support-bot\" {`");
            }
        };
        let open = self.expect(Tok::LBrace, "`{` to open the agent's body")?;
        let mut agent = Agent {
            id,
            ..Agent::default()
        };
        loop {
            self.skip_separators();
            match self.peek() {
                Tok::RBrace => {
                    meta.dangling = self.dangling();
                    self.advance();
                    self.end_of_statement()?;
                    break;
                }
                Tok::Eof => return self.unclosed(open, "agent"),
                _ => {}
            }
            if self.agent_item(&mut agent).is_err() {
                self.recover();
            }
        }
        self.finish(&mut meta);
        agent.meta = meta;
        Ok(agent)
    }

    fn agent_item(&mut self, agent: &mut Agent) -> PResult<()> {
        let Some(word) = self.word().map(str::to_string) else {
            return self.unexpected("an agent statement such as `rules {` or `default deny`");
        };
        match word.as_str() {
            "default" => self.default_statement(&mut agent.default, &mut agent.default_meta)?,
            "rules" => {
                let meta = self.meta_here();
                self.advance();
                self.rules_block(agent, meta)?;
            }
            "rate_limit" => {
                let r = self.rate_limit()?;
                agent.rate_limits.push(r);
            }
            "redact" => {
                let r = self.redact()?;
                agent.redact.push(r);
            }
            "cost" => {
                let c = self.cost()?;
                agent.costs.push(c);
            }
            "budget" => {
                let b = self.budget()?;
                agent.budgets.push(b);
            }
            "egress" => {
                let meta = self.meta_here();
                self.advance();
                let block = self.block(meta)?;
                match &mut agent.egress {
                    Some(existing) => existing.entries.extend(block.entries),
                    None => agent.egress = Some(block),
                }
            }
            "credential" => {
                let c = self.named_block("credential")?;
                agent.credentials.push(c);
            }
            "alert" => {
                let meta = self.meta_here();
                self.advance();
                let block = self.block(meta)?;
                agent.alerts.push(block);
            }
            w if is_effect_word(w) => {
                let rule = self.rule()?;
                agent.rules.push(rule);
            }
            w => {
                let span = self.span();
                let mut candidates: Vec<&str> = AGENT_BODY.to_vec();
                candidates.extend(EFFECT_WORDS.iter().filter(|e| !e.ends_with('!')));
                return self.fail(
                    Diagnostic::new(
                        Code::UnknownStatement,
                        format!("unknown block `{w}` in agent"),
                    )
                    .at(span)
                    .label("not an agent statement")
                    .suggest(w, &candidates, "an agent holds"),
                );
            }
        }
        Ok(())
    }

    /// `default EFFECT`, for an agent or for the flat rules.
    fn default_statement(
        &mut self,
        slot: &mut Option<Spanned<Effect>>,
        slot_meta: &mut Meta,
    ) -> PResult<()> {
        let mut meta = self.meta_here();
        let keyword = self.advance().span;
        let effect = self.effect_word()?;
        if effect.value == Effect::DenyMandatory {
            return self.fail(
                Diagnostic::new(Code::BadValue, "`deny!` cannot be a default")
                    .at(effect.span)
                    .help("write `default deny`"),
            );
        }
        self.end_of_statement()?;
        self.finish(&mut meta);
        if let Some(prev) = slot {
            return self.fail(
                Diagnostic::new(Code::DuplicateClause, "this agent already has a `default`")
                    .at(keyword.to(effect.span))
                    .help(format!(
                        "keep one `default`; the first one says `{}`",
                        prev.value.keyword()
                    )),
            );
        }
        *slot = Some(effect);
        *slot_meta = meta;
        Ok(())
    }

    fn rules_block(&mut self, agent: &mut Agent, mut meta: Meta) -> PResult<()> {
        let open = self.expect(Tok::LBrace, "`{` after `rules`")?;
        loop {
            self.skip_separators();
            match self.peek() {
                Tok::RBrace => {
                    meta.dangling = self.dangling();
                    self.advance();
                    self.end_of_statement()?;
                    break;
                }
                Tok::Eof => return self.unclosed(open, "rules"),
                _ => {}
            }
            let rule = match self.word() {
                Some(w) if is_effect_word(w) => self.rule(),
                Some(w) => {
                    let w = w.to_string();
                    let spellings: Vec<&str> = EFFECT_WORDS.to_vec();
                    let span = self.span();
                    self.fail(
                        Diagnostic::new(Code::UnknownEffect, format!("unknown effect `{w}`"))
                            .at(span)
                            .label("a rule starts with its effect")
                            .suggest(&w, &spellings, "effects are"),
                    )
                }
                None => self.unexpected("a rule, like `permit stripe/refund if amount < $500`"),
            };
            match rule {
                Ok(r) => agent.rules.push(r),
                Err(Abort) => self.recover(),
            }
        }
        self.finish(&mut meta);
        // A second `rules` block continues the first; keep its comments.
        let mut previous = std::mem::take(&mut agent.rules_meta);
        previous.leading.extend(meta.leading);
        previous.dangling.extend(meta.dangling);
        if previous.span.is_empty() {
            previous.span = meta.span;
            previous.blank_before = meta.blank_before;
            previous.trailing = meta.trailing;
        }
        agent.rules_meta = previous;
        Ok(())
    }

    fn effect_word(&mut self) -> PResult<Spanned<Effect>> {
        let t = self.token().clone();
        let Tok::Word(w) = &t.tok else {
            return self.unexpected("an effect: permit, deny or defer");
        };
        let effect = match w.as_str() {
            "approve" => Some(Effect::Permit),
            w => Effect::from_word(w),
        };
        let Some(mut effect) = effect else {
            let spellings: Vec<&str> = EFFECT_WORDS.to_vec();
            return self.fail(
                Diagnostic::new(Code::UnknownEffect, format!("unknown effect `{w}`"))
                    .at(t.span)
                    .suggest(w, &spellings, "effects are"),
            );
        };
        self.advance();
        let mut span = t.span;
        if effect == Effect::Deny && *self.peek() == Tok::Bang {
            span = span.to(self.advance().span);
            effect = Effect::DenyMandatory;
        }
        Ok(Spanned::new(effect, span))
    }

    // ---- rules ----

    fn rule(&mut self) -> PResult<Rule> {
        let mut meta = self.meta_here();
        let effect = self.effect_word()?;
        let tool = match self.peek().clone() {
            Tok::Word(w) if !CLAUSES.contains(&w.as_str()) => Spanned::new(w, self.advance().span),
            Tok::Lit(Literal::Str(s)) => Spanned::new(s, self.advance().span),
            _ => {
                return self.unexpected(&format!(
                    "a tool pattern after `{}`, like `stripe/refund` or `stripe/*`",
                    effect.value.keyword()
                ));
            }
        };
        let mut rule = Rule {
            effect,
            tool,
            ..Rule::default()
        };
        loop {
            // A clause may continue the rule on the next line (`\n  reason "…"`).
            if *self.peek() == Tok::Newline
                && matches!(self.peek_past_newlines(), Tok::Word(w) if CLAUSES.contains(&w.as_str()))
            {
                self.skip_newlines();
            }
            let t = self.token().clone();
            match &t.tok {
                Tok::Newline | Tok::Semi | Tok::RBrace | Tok::Eof => break,
                Tok::Word(w) => match w.as_str() {
                    "if" | "when" => {
                        self.advance();
                        self.skip_newlines();
                        let cond = self.expr(0)?;
                        self.set_clause(&mut rule.condition, cond, t.span, "condition")?;
                    }
                    "reason" | "notify" => {
                        self.advance();
                        self.eat(&Tok::Colon);
                        let text =
                            self.string(&format!("the {w} text in quotes, e.g. `{w} \"…\"`"))?;
                        let slot = if w == "reason" {
                            &mut rule.reason
                        } else {
                            &mut rule.notify
                        };
                        self.set_clause(slot, text, t.span, w)?;
                    }
                    "method" | "host" | "path" => {
                        self.advance();
                        self.eat(&Tok::Colon);
                        let v = self.string_or_word(&format!("a value after `{w}`"))?;
                        let slot = match w.as_str() {
                            "method" => &mut rule.method,
                            "host" => &mut rule.host,
                            _ => &mut rule.path,
                        };
                        self.set_clause(slot, v, t.span, w)?;
                    }
                    "port" | "query" | "header" | "headers" => {
                        return self.fail(
                            Diagnostic::new(
                                Code::Expected,
                                format!("the `{w}` clause is not supported"),
                            )
                            .at(t.span)
                            .help(format!(
                                "write it as a condition instead, e.g. `if args.{w} == …`"
                            )),
                        );
                    }
                    _ => return self.after_rule_error(&t),
                },
                _ => return self.after_rule_error(&t),
            }
        }
        self.end_of_statement()?;
        self.finish(&mut meta);
        rule.meta = meta;
        Ok(rule)
    }

    fn after_rule_error<T>(&mut self, t: &Token) -> PResult<T> {
        let mut d = Diagnostic::new(
            Code::Expected,
            format!("{} cannot follow the rule here", t.tok.describe()),
        )
        .at(t.span)
        .label(
            "expected `if`, `reason`, `notify`, `method`, `host`, `path` or the end of the line",
        );
        if let Tok::Word(w) = &t.tok {
            d = d.suggest(w, CLAUSES, "a rule may continue with");
        } else if matches!(
            t.tok,
            Tok::EqEq | Tok::Lt | Tok::Gt | Tok::Le | Tok::Ge | Tok::NotEq
        ) {
            d = d.help("a condition starts with `if`: `permit tool if amount < $500`");
        }
        self.fail(d)
    }

    fn set_clause<T>(
        &mut self,
        slot: &mut Option<T>,
        value: T,
        span: Span,
        what: &str,
    ) -> PResult<()> {
        if slot.is_some() {
            return self.fail(
                Diagnostic::new(
                    Code::DuplicateClause,
                    format!("this rule already has a {what}"),
                )
                .at(span)
                .help("combine them into one: conditions with `and`"),
            );
        }
        *slot = Some(value);
        Ok(())
    }

    fn pattern(&mut self, after: &str) -> PResult<Spanned<String>> {
        self.string_or_word(&format!(
            "a tool pattern after `{after}`, like `\"stripe/charge\"`"
        ))
    }

    fn rate_limit(&mut self) -> PResult<RateLimit> {
        let mut meta = self.meta_here();
        self.advance();
        let tool = self.pattern("rate_limit")?;
        self.eat(&Tok::Colon);
        let t = self.token().clone();
        let limit = match &t.tok {
            Tok::Lit(Literal::Number(n))
                if n.is_integer() && n.is_sign_positive() && !n.is_zero() =>
            {
                match u64::try_from(*n) {
                    Ok(v) => Spanned::new(v, t.span),
                    Err(_) => return self.unexpected("a whole number of calls"),
                }
            }
            Tok::Lit(Literal::Number(_)) => {
                return self.fail(
                    Diagnostic::new(
                        Code::BadValue,
                        "a rate limit must be a whole number greater than 0",
                    )
                    .at(t.span)
                    .help("write e.g. `20 per minute`"),
                );
            }
            _ => return self.unexpected("the number of calls allowed, e.g. `20 per minute`"),
        };
        self.advance();
        if !self.at_word("per") {
            let found = self.token().clone();
            return self.fail(
                Diagnostic::new(
                    Code::Expected,
                    format!(
                        "expected `per` after the count, found {}",
                        found.tok.describe()
                    ),
                )
                .at(found.span)
                .label("expected `per`")
                .help(format!(
                    "write `{} per minute` (or second, hour, day)",
                    limit.value
                )),
            );
        }
        self.advance();
        let per = self.rate_unit()?;
        let mut per_session = false;
        if self.at_word("per") {
            self.advance();
            if !self.at_word("session") {
                return self.unexpected("`session` after the second `per`");
            }
            self.advance();
            per_session = true;
        }
        self.end_of_statement()?;
        self.finish(&mut meta);
        Ok(RateLimit {
            meta,
            tool,
            limit,
            per,
            per_session,
        })
    }

    fn rate_unit(&mut self) -> PResult<Spanned<RateUnit>> {
        let t = self.token().clone();
        let words: Vec<&str> = RateUnit::ALL.iter().map(|(_, w, _)| *w).collect();
        if let Tok::Word(w) = &t.tok {
            let singular = w.strip_suffix('s').unwrap_or(w);
            if let Some((unit, ..)) = RateUnit::ALL.iter().find(|(_, name, _)| *name == singular) {
                self.advance();
                return Ok(Spanned::new(*unit, t.span));
            }
            return self.fail(
                Diagnostic::new(Code::BadValue, format!("unknown rate window `{w}`"))
                    .at(t.span)
                    .suggest(w, &words, "rate windows are"),
            );
        }
        self.unexpected("a window: second, minute, hour or day")
    }

    fn redact(&mut self) -> PResult<Redact> {
        let mut meta = self.meta_here();
        self.advance();
        let tool = self.pattern("redact")?;
        if !self.at_word("args") {
            return self.unexpected("`args: [\"field\", …]` after the tool pattern");
        }
        self.advance();
        if matches!(self.peek(), Tok::Colon | Tok::Assign) {
            self.advance();
        }
        let open = self.expect(Tok::LBracket, "`[` and the argument paths to redact")?;
        let mut args = Vec::new();
        loop {
            self.skip_newlines();
            match self.peek() {
                Tok::RBracket => {
                    self.advance();
                    break;
                }
                Tok::Eof => {
                    return self.fail(
                        Diagnostic::new(Code::Unclosed, "this `[` is never closed").at(open),
                    );
                }
                _ => {}
            }
            args.push(self.string_or_word("an argument path in quotes, e.g. `\"card_number\"`")?);
            self.skip_newlines();
            if !self.eat(&Tok::Comma) && *self.peek() != Tok::RBracket {
                return self.unexpected("`,` or `]`");
            }
        }
        self.end_of_statement()?;
        self.finish(&mut meta);
        Ok(Redact { meta, tool, args })
    }

    fn cost(&mut self) -> PResult<Cost> {
        let mut meta = self.meta_here();
        self.advance();
        let tool = self.pattern("cost")?;
        self.expect(
            Tok::Colon,
            "`:` and the cost, e.g. `cost stripe/charge: amount`",
        )?;
        let amount = self.expr(0)?;
        self.end_of_statement()?;
        self.finish(&mut meta);
        Ok(Cost { meta, tool, amount })
    }

    fn budget(&mut self) -> PResult<Budget> {
        let meta = self.meta_here();
        self.advance();
        let t = self.token().clone();
        let window = match &t.tok {
            Tok::Word(w) => match BudgetWindow::from_word(w) {
                Some(win) => Spanned::new(win, t.span),
                None => {
                    let words: Vec<&str> = BudgetWindow::ALL.iter().map(|(_, s)| *s).collect();
                    return self.fail(
                        Diagnostic::new(Code::BadValue, format!("unknown budget window `{w}`"))
                            .at(t.span)
                            .suggest(w, &words, "budget windows are"),
                    );
                }
            },
            _ => return self.unexpected("a budget window: hourly, daily, monthly or session"),
        };
        self.advance();
        let (entries, mut meta) = self.entries(meta, &[])?;
        self.finish(&mut meta);
        Ok(Budget {
            meta,
            window,
            entries,
        })
    }

    // ---- expressions ----

    fn expr(&mut self, min_prec: u8) -> PResult<Expr> {
        self.enter()?;
        let result = self.expr_inner(min_prec);
        self.depth = self.depth.saturating_sub(1);
        result
    }

    fn expr_inner(&mut self, min_prec: u8) -> PResult<Expr> {
        let mut lhs = if self.at_not() {
            let start = self.advance().span;
            if NOT_PRECEDENCE < min_prec {
                // `a == not b`: comparisons take plain operands.
                return self.fail(
                    Diagnostic::new(Code::Expected, "`not` cannot stand here")
                        .at(start)
                        .help("put the negated part in parentheses: `a == (not b)`"),
                );
            }
            let operand = self.expr(NOT_PRECEDENCE)?;
            let span = start.to(operand.span);
            Expr::new(ExprKind::Not(Box::new(operand)), span)
        } else {
            self.primary()?
        };
        let mut compared = false;
        loop {
            self.continue_on_next_line();
            let Some((op, width)) = self.binop()? else {
                break;
            };
            if op.precedence() < min_prec {
                break;
            }
            if op.is_comparison() && compared {
                let span = self.span();
                return self.fail(
                    Diagnostic::new(
                        Code::ChainedComparison,
                        format!(
                            "comparisons do not chain: `{}` follows another comparison",
                            op.symbol()
                        ),
                    )
                    .at(span)
                    .help("join them with `and`: `a < b and b < c`"),
                );
            }
            for _ in 0..width {
                self.advance();
            }
            self.skip_newlines();
            let rhs_prec = if op.is_comparison() {
                5
            } else {
                op.precedence() + 1
            };
            let rhs = self.expr(rhs_prec)?;
            let span = lhs.span.to(rhs.span);
            compared = op.is_comparison();
            lhs = Expr::new(
                ExprKind::Binary {
                    op,
                    lhs: Box::new(lhs),
                    rhs: Box::new(rhs),
                },
                span,
            );
        }
        Ok(lhs)
    }

    fn at_not(&self) -> bool {
        *self.peek() == Tok::Bang || (self.at_word("not") && !self.peek_nth(1).is_word("in"))
    }

    /// A line that starts with `and`/`or` continues the condition above it.
    fn continue_on_next_line(&mut self) {
        if *self.peek() != Tok::Newline {
            return;
        }
        let continues = match self.peek_past_newlines() {
            Tok::AndAnd | Tok::OrOr => true,
            Tok::Word(w) => w == "and" || w == "or",
            _ => false,
        };
        if continues {
            self.skip_newlines();
        }
    }

    /// The binary operator at the cursor and how many tokens it spans.
    fn binop(&mut self) -> PResult<Option<(BinOp, usize)>> {
        let op = match self.peek() {
            Tok::EqEq => BinOp::Eq,
            Tok::NotEq => BinOp::Ne,
            Tok::Lt => BinOp::Lt,
            Tok::Le => BinOp::Le,
            Tok::Gt => BinOp::Gt,
            Tok::Ge => BinOp::Ge,
            Tok::AndAnd => BinOp::And,
            Tok::OrOr => BinOp::Or,
            Tok::Word(w) => match w.as_str() {
                "and" => BinOp::And,
                "or" => BinOp::Or,
                "in" => BinOp::In,
                "matches" => BinOp::Matches,
                "contains" => BinOp::Contains,
                "starts_with" => BinOp::StartsWith,
                "ends_with" => BinOp::EndsWith,
                "not" if self.peek_nth(1).is_word("in") => return Ok(Some((BinOp::NotIn, 2))),
                _ => return Ok(None),
            },
            Tok::Assign => {
                let span = self.span();
                return self.fail(
                    Diagnostic::new(Code::Expected, "`=` assigns; conditions compare with `==`")
                        .at(span)
                        .help("write `==`"),
                );
            }
            Tok::RegexMatch => {
                let span = self.span();
                return self.fail(
                    Diagnostic::new(Code::Expected, "`=~` is not an FPL operator")
                        .at(span)
                        .help("write `x matches \"regex\"`"),
                );
            }
            _ => return Ok(None),
        };
        Ok(Some((op, 1)))
    }

    fn primary(&mut self) -> PResult<Expr> {
        let t = self.token().clone();
        match t.tok {
            Tok::Lit(lit) => {
                self.advance();
                Ok(Expr::new(ExprKind::Literal(lit), t.span))
            }
            Tok::LParen => {
                let open_at = self.pos;
                self.advance();
                self.skip_newlines();
                let inner = self.expr(0)?;
                self.skip_newlines();
                if *self.peek() != Tok::RParen {
                    let found = self.token().clone();
                    self.error(
                        Diagnostic::new(
                            Code::Unclosed,
                            format!(
                                "this `(` is never closed: expected `)`, found {}",
                                found.tok.describe()
                            ),
                        )
                        .at(t.span)
                        .label("opened here")
                        .help("add the matching `)`"),
                    );
                    // Resume after the line of the `(`, so the lines it swallowed are parsed.
                    self.pos = (open_at..self.tokens.len())
                        .find(|&i| self.tokens[i].tok == Tok::Newline)
                        .unwrap_or(self.pos)
                        .min(self.pos);
                    return Err(Abort);
                }
                let close = self.advance().span;
                Ok(Expr::new(inner.kind, t.span.to(close)))
            }
            Tok::LBracket => self.list_expr(t.span),
            // Before calls: an operator is never a function name (`not in(x)` is `not in`).
            Tok::Word(w) if is_operator_word(&w) => self.fail(
                Diagnostic::new(
                    Code::Expected,
                    format!("expected a value, found the operator `{w}`"),
                )
                .at(t.span)
                .label("a name, string, number or list goes here"),
            ),
            Tok::Word(w)
                if *self.peek_nth(1) == Tok::LParen
                    && self.tokens[self.pos + 1].span.start == t.span.end =>
            {
                self.call(w, t.span)
            }
            Tok::Word(w) => {
                self.advance();
                let segments: Vec<String> = w.split('.').map(str::to_string).collect();
                if segments
                    .iter()
                    .any(|s| s.is_empty() || s.contains(['/', '*']))
                {
                    return self.fail(
                        Diagnostic::new(Code::Expected, format!("`{w}` is not a field name"))
                            .at(t.span)
                            .help("fields are names joined by dots, like `amount` or `to.domain`; quote text: `\"stripe/refund\"`"),
                    );
                }
                Ok(Expr::new(ExprKind::Path(segments), t.span))
            }
            Tok::Newline | Tok::Eof | Tok::RBrace => self.fail(
                Diagnostic::new(Code::Expected, "the condition is incomplete")
                    .at(t.span)
                    .label("expected a value here")
                    .help("finish the comparison, e.g. `amount < $500`"),
            ),
            _ => self.unexpected("a value: a name, string, number, money or list"),
        }
    }

    fn list_expr(&mut self, open: Span) -> PResult<Expr> {
        self.enter()?;
        self.advance();
        let mut items = Vec::new();
        let close = loop {
            self.skip_newlines();
            match self.peek() {
                Tok::RBracket => break self.advance().span,
                Tok::Eof | Tok::RBrace => {
                    return self.fail(
                        Diagnostic::new(Code::Unclosed, "this `[` is never closed")
                            .at(open)
                            .help("add the matching `]`"),
                    );
                }
                _ => {}
            }
            items.push(self.expr(0)?);
            self.skip_newlines();
            if !self.eat(&Tok::Comma) && *self.peek() != Tok::RBracket {
                return self.unexpected("`,` or `]` in the list");
            }
        };
        self.depth -= 1;
        Ok(Expr::new(ExprKind::List(items), open.to(close)))
    }

    fn call(&mut self, func: String, span: Span) -> PResult<Expr> {
        self.enter()?;
        self.advance();
        let open = self.advance().span;
        let mut args = Vec::new();
        let close = loop {
            self.skip_newlines();
            match self.peek() {
                Tok::RParen => break self.advance().span,
                Tok::Eof | Tok::RBrace => {
                    return self.fail(
                        Diagnostic::new(
                            Code::Unclosed,
                            format!("the `(` of `{func}(` is never closed"),
                        )
                        .at(open)
                        .help("add the matching `)`"),
                    );
                }
                _ => {}
            }
            args.push(self.expr(0)?);
            self.skip_newlines();
            if !self.eat(&Tok::Comma) && *self.peek() != Tok::RParen {
                return self.unexpected("`,` or `)` in the call");
            }
        };
        self.depth -= 1;
        Ok(Expr::new(
            ExprKind::Call {
                func: Spanned::new(func, span),
                args,
            },
            span.to(close),
        ))
    }
}

fn is_effect_word(w: &str) -> bool {
    EFFECT_WORDS.contains(&w)
}

fn is_operator_word(w: &str) -> bool {
    matches!(
        w,
        "and" | "or" | "in" | "matches" | "contains" | "starts_with" | "ends_with"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broken_statements_do_not_leak_nesting_depth() {
        let mut src = String::from("agent \"a\" {\n  default deny\n  rules {\n");
        for _ in 0..(MAX_DEPTH * 2) {
            src.push_str("    permit x if a in [1 2]\n");
        }
        src.push_str("    permit y if ((a == 1))\n  }\n}\n");
        let parsed = parse(&src);
        assert_eq!(parsed.diagnostics.len(), MAX_DEPTH * 2);
        assert!(parsed.diagnostics.iter().all(|d| d.code == Code::Expected));
        assert_eq!(parsed.policy.agents[0].rules.len(), 1);
    }
}
