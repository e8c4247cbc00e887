//! Source locations and the non-semantic metadata (comments, blank lines) that rides on AST nodes.

use std::ops::Range;

/// A byte range in the source text.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Self {
        Span { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }

    pub fn len(self) -> usize {
        self.end.saturating_sub(self.start)
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }

    pub fn range(self) -> Range<usize> {
        self.start..self.end
    }
}

/// 1-based line and column (column counted in characters) of a byte offset.
pub fn line_col(source: &str, offset: usize) -> (usize, usize) {
    let offset = floor_char_boundary(source, offset.min(source.len()));
    let before = &source[..offset];
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col = before[line_start..].chars().count() + 1;
    (line, col)
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// Where a node came from and the comments written around it.
///
/// Metadata is not meaning: two nodes that differ only in `Meta` are equal, and `Meta` is
/// never serialized. That is what lets `parse(format(ast)) == ast` and FPL → JSON → FPL
/// round trips compare the policy itself.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    pub span: Span,
    /// Whole-line comments directly above the node, without the leading `#`.
    pub leading: Vec<String>,
    /// A comment at the end of the node's last line.
    pub trailing: Option<String>,
    /// Comments inside the node's block, after its last entry.
    pub dangling: Vec<String>,
    /// The source had a blank line before this node.
    pub blank_before: bool,
}

impl Meta {
    pub fn at(span: Span) -> Self {
        Meta {
            span,
            ..Meta::default()
        }
    }
}

impl PartialEq for Meta {
    fn eq(&self, _: &Meta) -> bool {
        true
    }
}

impl Eq for Meta {}
