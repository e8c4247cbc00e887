//! Text → tokens. Comments go to a side list so the formatter can put them back.

use rust_decimal::Decimal;

use crate::ast::{DurationUnit, Literal, Quantity, SizeUnit};
use crate::diagnostic::{Code, Diagnostic};
use crate::span::Span;

#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// A bare word: keywords, names, dotted paths and tool patterns (`stripe/*`, `**`).
    Word(String),
    Lit(Literal),
    LBrace,
    RBrace,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Comma,
    Semi,
    Colon,
    Assign,
    EqEq,
    NotEq,
    Lt,
    Le,
    Gt,
    Ge,
    Bang,
    AndAnd,
    OrOr,
    /// `=~`, accepted only to say "use `matches`".
    RegexMatch,
    Newline,
    Eof,
}

impl Tok {
    /// How the token reads in an error message.
    pub fn describe(&self) -> String {
        match self {
            Tok::Word(w) => format!("`{w}`"),
            Tok::Lit(Literal::Str(_)) => "a string".into(),
            Tok::Lit(Literal::Money(_)) => "a money amount".into(),
            Tok::Lit(Literal::Duration(_)) => "a duration".into(),
            Tok::Lit(Literal::Size(_)) => "a size".into(),
            Tok::Lit(_) => "a number".into(),
            Tok::Newline => "the end of the line".into(),
            Tok::Eof => "the end of the file".into(),
            other => format!("`{}`", other.symbol()),
        }
    }

    pub fn symbol(&self) -> &'static str {
        match self {
            Tok::LBrace => "{",
            Tok::RBrace => "}",
            Tok::LParen => "(",
            Tok::RParen => ")",
            Tok::LBracket => "[",
            Tok::RBracket => "]",
            Tok::Comma => ",",
            Tok::Semi => ";",
            Tok::Colon => ":",
            Tok::Assign => "=",
            Tok::EqEq => "==",
            Tok::NotEq => "!=",
            Tok::Lt => "<",
            Tok::Le => "<=",
            Tok::Gt => ">",
            Tok::Ge => ">=",
            Tok::Bang => "!",
            Tok::AndAnd => "&&",
            Tok::OrOr => "||",
            Tok::RegexMatch => "=~",
            _ => "",
        }
    }

    pub fn is_word(&self, w: &str) -> bool {
        matches!(self, Tok::Word(x) if x == w)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    pub tok: Tok,
    pub span: Span,
}

/// A `#` comment: its text without the `#`, and where it stood.
#[derive(Debug, Clone, PartialEq)]
pub struct Comment {
    pub text: String,
    pub span: Span,
    /// Code precedes it on the same line.
    pub trailing: bool,
}

#[derive(Debug, Default)]
pub struct Lexed {
    pub tokens: Vec<Token>,
    pub comments: Vec<Comment>,
    pub diagnostics: Vec<Diagnostic>,
}

pub fn lex(src: &str) -> Lexed {
    let mut lx = Lexer {
        src,
        pos: 0,
        out: Lexed::default(),
        line_has_code: false,
    };
    lx.run();
    lx.out
}

struct Lexer<'a> {
    src: &'a str,
    pos: usize,
    out: Lexed,
    line_has_code: bool,
}

fn is_word_start(c: char) -> bool {
    c.is_alphabetic() || c == '_' || c == '*'
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || matches!(c, '_' | '*' | '/' | '.' | '-')
}

impl Lexer<'_> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn peek_at(&self, n: usize) -> Option<char> {
        self.src[self.pos..].chars().nth(n)
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn push(&mut self, tok: Tok, start: usize) {
        if tok != Tok::Newline {
            self.line_has_code = true;
        }
        self.out.tokens.push(Token {
            tok,
            span: Span::new(start, self.pos),
        });
    }

    fn error(&mut self, d: Diagnostic) {
        self.out.diagnostics.push(d);
    }

    fn run(&mut self) {
        while let Some(c) = self.peek() {
            let start = self.pos;
            match c {
                '\n' => {
                    self.bump();
                    self.push(Tok::Newline, start);
                    self.line_has_code = false;
                }
                c if c.is_whitespace() => {
                    self.bump();
                }
                '#' => self.comment(),
                '"' | '\'' => self.string(c),
                '$' => self.money(),
                '-' if self.peek_at(1).is_some_and(|d| d.is_ascii_digit()) => self.number(),
                c if c.is_ascii_digit() => self.number(),
                c if is_word_start(c) => self.word(),
                _ => self.punct(c),
            }
        }
        let end = self.src.len();
        self.out.tokens.push(Token {
            tok: Tok::Eof,
            span: Span::new(end, end),
        });
    }

    fn comment(&mut self) {
        let start = self.pos;
        let end = self.src[start..]
            .find('\n')
            .map_or(self.src.len(), |i| start + i);
        let text = self.src[start + 1..end].trim_end().to_string();
        self.out.comments.push(Comment {
            text,
            span: Span::new(start, end),
            trailing: self.line_has_code,
        });
        self.pos = end;
    }

    fn word(&mut self) {
        let start = self.pos;
        while self.peek().is_some_and(is_word_char) {
            self.bump();
        }
        // Trust keys are written bare: `ed25519:<base64>`.
        if &self.src[start..self.pos] == "ed25519" && self.peek() == Some(':') {
            self.bump();
            while self.peek().is_some_and(|c| {
                c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '=' | '-' | '_')
            }) {
                self.bump();
            }
        }
        let text = &self.src[start..self.pos];
        let tok = match text {
            "true" => Tok::Lit(Literal::Bool(true)),
            "false" => Tok::Lit(Literal::Bool(false)),
            "null" | "nil" => Tok::Lit(Literal::Null),
            _ => Tok::Word(text.to_string()),
        };
        self.push(tok, start);
    }

    fn punct(&mut self, c: char) {
        let start = self.pos;
        self.bump();
        let next = self.peek();
        let two = |lx: &mut Self, t: Tok| {
            lx.bump();
            t
        };
        let tok = match (c, next) {
            ('{', _) => Tok::LBrace,
            ('}', _) => Tok::RBrace,
            ('(', _) => Tok::LParen,
            (')', _) => Tok::RParen,
            ('[', _) => Tok::LBracket,
            (']', _) => Tok::RBracket,
            (',', _) => Tok::Comma,
            (';', _) => Tok::Semi,
            (':', _) => Tok::Colon,
            ('=', Some('=')) => two(self, Tok::EqEq),
            ('=', Some('~')) => two(self, Tok::RegexMatch),
            ('=', _) => Tok::Assign,
            ('!', Some('=')) => two(self, Tok::NotEq),
            ('!', _) => Tok::Bang,
            ('<', Some('=')) => two(self, Tok::Le),
            ('<', _) => Tok::Lt,
            ('>', Some('=')) => two(self, Tok::Ge),
            ('>', _) => Tok::Gt,
            ('&', Some('&')) => two(self, Tok::AndAnd),
            ('|', Some('|')) => two(self, Tok::OrOr),
            _ => {
                let shown = if c.is_control() {
                    format!("{:?}", c)
                } else {
                    format!("`{c}`")
                };
                let help = match c {
                    '&' => "write `and` (or `&&`)",
                    '|' => "write `or` (or `||`)",
                    '\0' => "policy files are text; NUL bytes are not allowed",
                    _ => "remove it, or put it inside a string",
                };
                self.error(
                    Diagnostic::new(
                        Code::UnexpectedChar,
                        format!("unexpected character {shown}"),
                    )
                    .at(Span::new(start, self.pos))
                    .label("not part of FPL")
                    .help(help),
                );
                return;
            }
        };
        self.push(tok, start);
    }

    fn string(&mut self, quote: char) {
        let start = self.pos;
        self.bump();
        let mut value = String::new();
        loop {
            match self.peek() {
                None | Some('\n') => {
                    self.error(
                        Diagnostic::new(Code::UnterminatedString, "unterminated string")
                            .at(Span::new(start, self.pos))
                            .label("this string is never closed")
                            .help(format!(
                                "add the closing `{quote}` on the same line; strings cannot span lines"
                            )),
                    );
                    self.push(Tok::Lit(Literal::Str(value)), start);
                    return;
                }
                Some(c) if c == quote => {
                    self.bump();
                    self.push(Tok::Lit(Literal::Str(value)), start);
                    return;
                }
                Some('\\') => self.escape(&mut value),
                Some(c) => {
                    self.bump();
                    value.push(c);
                }
            }
        }
    }

    fn escape(&mut self, value: &mut String) {
        let start = self.pos;
        self.bump();
        match self.peek() {
            Some('"') => value.push('"'),
            Some('\'') => value.push('\''),
            Some('\\') => value.push('\\'),
            Some('n') => value.push('\n'),
            Some('t') => value.push('\t'),
            Some('r') => value.push('\r'),
            Some('u') if self.peek_at(1) == Some('{') => {
                self.unicode_escape(start, value);
                return;
            }
            Some(c) if c != '\n' => {
                // Kept as written so a regex like "\d+" still means what its author meant.
                value.push('\\');
                value.push(c);
                self.bump();
                self.error(
                    Diagnostic::new(
                        Code::BadEscape,
                        format!("unknown escape `\\{c}` is kept as `\\{c}`"),
                    )
                    .at(Span::new(start, self.pos))
                    .help(format!(
                        "write `\\\\{c}` to mean a backslash followed by `{c}`"
                    )),
                );
                return;
            }
            _ => return,
        }
        self.bump();
    }

    fn unicode_escape(&mut self, start: usize, value: &mut String) {
        self.bump(); // u
        self.bump(); // {
        let digits_start = self.pos;
        while self.peek().is_some_and(|c| c.is_ascii_hexdigit()) {
            self.bump();
        }
        let digits = &self.src[digits_start..self.pos];
        let closed = self.peek() == Some('}');
        if closed {
            self.bump();
        }
        let ch = u32::from_str_radix(digits, 16)
            .ok()
            .and_then(char::from_u32);
        match (closed, ch) {
            (true, Some(c)) if c != '\0' => value.push(c),
            _ => self.error(
                Diagnostic::new(Code::BadUnicodeEscape, "invalid unicode escape")
                    .at(Span::new(start, self.pos))
                    .help("write `\\u{…}` with 1 to 6 hex digits naming a non-NUL character, e.g. `\\u{e9}`"),
            ),
        }
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit() || c == '_') {
            self.bump();
        }
    }

    /// Digits with `_` separators and an optional fraction; returns the text without `_`.
    fn decimal_text(&mut self) -> String {
        let start = self.pos;
        self.digits();
        if self.peek() == Some('.') && self.peek_at(1).is_some_and(|c| c.is_ascii_digit()) {
            self.bump();
            self.digits();
        }
        self.src[start..self.pos].replace('_', "")
    }

    fn money(&mut self) {
        let start = self.pos;
        self.bump();
        if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.error(
                Diagnostic::new(Code::BadMoney, "`$` must be followed by an amount")
                    .at(Span::new(start, self.pos))
                    .label("expected digits after `$`")
                    .help("write money as `$500`, `$2000.50` or `$50_000`"),
            );
            self.placeholder(Literal::Money(Decimal::ZERO), start);
            return;
        }
        let text = self.decimal_text();
        let suffix_start = self.pos;
        while self.peek().is_some_and(|c| c.is_alphanumeric()) {
            self.bump();
        }
        match (text.parse::<Decimal>(), suffix_start == self.pos) {
            (Ok(d), true) => self.push(Tok::Lit(Literal::Money(d)), start),
            _ => {
                self.error(
                    Diagnostic::new(
                        Code::BadMoney,
                        format!("invalid money amount `{}`", &self.src[start..self.pos]),
                    )
                    .at(Span::new(start, self.pos))
                    .help("write money as `$500`, `$2000.50` or `$50_000`, with at most 28 digits"),
                );
                self.placeholder(Literal::Money(Decimal::ZERO), start);
            }
        }
    }

    /// After a malformed literal, a stand-in keeps the parser from reporting the same problem
    /// again as a missing value.
    fn placeholder(&mut self, lit: Literal, start: usize) {
        self.push(Tok::Lit(lit), start);
    }

    fn number(&mut self) {
        let start = self.pos;
        if self.peek() == Some('-') {
            self.bump();
        }
        let text = self.decimal_text();
        let negative = self.src[start..].starts_with('-');
        let suffix_start = self.pos;
        while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
            self.bump();
        }
        let suffix = &self.src[suffix_start..self.pos];
        let written = &self.src[start..self.pos];
        let lit = if suffix.is_empty() {
            let full = if negative { format!("-{text}") } else { text };
            full.parse::<Decimal>().map(Literal::Number).map_err(|_| {
                (
                    format!("invalid number `{written}`"),
                    "numbers have at most 28 significant digits",
                )
            })
        } else {
            match unit_literal(&text, suffix) {
                Some(_) if negative => Err((
                    format!("`{written}` is negative"),
                    "durations and sizes cannot be negative",
                )),
                Some(Ok(lit)) => Ok(lit),
                Some(Err(msg)) => Err((
                    msg,
                    "durations and sizes are whole numbers: write `1500ms`, not `1.5s`",
                )),
                None => Err((
                    format!("unknown unit `{suffix}` in `{written}`"),
                    "durations take ms, s, m, h, d or w (`30s`); sizes take b, kb, mb, gb or tb (`10mb`)",
                )),
            }
        };
        match lit {
            Ok(lit) => self.push(Tok::Lit(lit), start),
            Err((msg, help)) => {
                let span = Span::new(start, self.pos);
                self.error(Diagnostic::new(Code::BadNumber, msg).at(span).help(help));
                self.placeholder(Literal::Number(Decimal::ZERO), start);
            }
        }
    }
}

/// `30s`, `10mb`: `None` if the suffix is not a unit.
fn unit_literal(text: &str, suffix: &str) -> Option<Result<Literal, String>> {
    let lower = suffix.to_ascii_lowercase();
    let whole = || {
        text.parse::<u64>()
            .map_err(|_| format!("`{text}{suffix}` must be a whole number that fits in 64 bits"))
    };
    if let Some((unit, ..)) = DurationUnit::ALL.iter().find(|(_, s, _)| *s == lower) {
        return Some(whole().map(|amount| {
            Literal::Duration(Quantity {
                amount,
                unit: *unit,
            })
        }));
    }
    if let Some((unit, ..)) = SizeUnit::ALL.iter().find(|(_, s, _)| *s == lower) {
        return Some(whole().map(|amount| {
            Literal::Size(Quantity {
                amount,
                unit: *unit,
            })
        }));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(src: &str) -> Vec<Tok> {
        lex(src).tokens.into_iter().map(|t| t.tok).collect()
    }

    #[test]
    fn words_carry_tool_patterns_and_paths() {
        assert_eq!(
            toks("permit stripe/* to.domain **"),
            vec![
                Tok::Word("permit".into()),
                Tok::Word("stripe/*".into()),
                Tok::Word("to.domain".into()),
                Tok::Word("**".into()),
                Tok::Eof
            ]
        );
    }

    #[test]
    fn literals() {
        let t = toks("$50_000 $2000.50 30s 10mb -3 0.8 \"a\\u{e9}\\n\"");
        assert_eq!(t[0], Tok::Lit(Literal::Money(Decimal::new(50_000, 0))));
        assert_eq!(t[1], Tok::Lit(Literal::Money(Decimal::new(200_050, 2))));
        assert_eq!(
            t[2],
            Tok::Lit(Literal::Duration(Quantity {
                amount: 30,
                unit: DurationUnit::Seconds
            }))
        );
        assert_eq!(
            t[3],
            Tok::Lit(Literal::Size(Quantity {
                amount: 10,
                unit: SizeUnit::Mb
            }))
        );
        assert_eq!(t[4], Tok::Lit(Literal::Number(Decimal::new(-3, 0))));
        assert_eq!(t[5], Tok::Lit(Literal::Number(Decimal::new(8, 1))));
        assert_eq!(t[6], Tok::Lit(Literal::Str("aé\n".into())));
    }

    #[test]
    fn errors_point_at_the_problem() {
        let l = lex("x \"open\n$ 5 3parsecs");
        let codes: Vec<_> = l.diagnostics.iter().map(|d| d.code).collect();
        assert_eq!(
            codes,
            vec![Code::UnterminatedString, Code::BadMoney, Code::BadNumber]
        );
        assert_eq!(l.diagnostics[0].span, Some(Span::new(2, 7)));
    }

    #[test]
    fn comments_are_kept_aside() {
        let l = lex("# head\npermit x # tail\n");
        assert_eq!(l.comments.len(), 2);
        assert!(!l.comments[0].trailing);
        assert!(l.comments[1].trailing);
        assert_eq!(l.comments[1].text, " tail");
    }
}
