//! Tool patterns: the one matcher used everywhere a tool pattern appears (rules, rate limits,
//! redaction, credentials, cost), and the containment test behind the unreachable-rule checks.
//!
//! Tool ids are `/`-separated segments. In a pattern, `*` matches any run of characters inside
//! one segment, a segment that is exactly `**` matches zero or more whole segments, and the
//! pattern `*` on its own matches every tool. Ids and patterns are compared after NFKC.

use std::collections::HashMap;

use unicode_normalization::UnicodeNormalization;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    /// `**`: zero or more whole segments.
    AnyDepth,
    /// A segment glob; `*` inside matches within the segment.
    Glob(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolPattern {
    text: String,
    segments: Vec<Segment>,
}

/// NFKC normal form, the shape every tool id is compared in.
pub fn normalize_tool(id: &str) -> String {
    id.nfkc().collect()
}

impl ToolPattern {
    /// Parses a pattern; the error says what is wrong with it.
    pub fn parse(text: &str) -> Result<ToolPattern, String> {
        let text = normalize_tool(text);
        if text.is_empty() {
            return Err("a tool pattern cannot be empty".into());
        }
        if text.chars().any(char::is_whitespace) {
            return Err(format!("tool pattern `{text}` contains whitespace"));
        }
        if text == "*" {
            return Ok(ToolPattern {
                text,
                segments: vec![Segment::AnyDepth],
            });
        }
        let mut segments = Vec::new();
        for seg in text.split('/') {
            if seg.is_empty() {
                return Err(format!(
                    "tool pattern `{text}` has an empty segment; segments are separated by a single `/`"
                ));
            }
            if seg == "**" {
                if segments.last() != Some(&Segment::AnyDepth) {
                    segments.push(Segment::AnyDepth);
                }
            } else if seg.contains("**") {
                return Err(format!(
                    "in `{text}`, `**` must be a whole segment (`a/**`); use `*` to match within a segment"
                ));
            } else {
                segments.push(Segment::Glob(seg.to_string()));
            }
        }
        Ok(ToolPattern { text, segments })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// No wildcard at all: the pattern names exactly one tool.
    pub fn literal(&self) -> Option<&str> {
        (!self.text.contains('*')).then_some(self.text.as_str())
    }

    /// Does the tool id (already NFKC-normalized) match? Allocation-free: this is on the
    /// decision path.
    pub fn matches(&self, tool: &str) -> bool {
        matches_segments(&self.segments, tool.split('/'))
    }

    /// Does every tool matched by `other` also match `self`? Sound: `true` is never wrong.
    pub fn covers(&self, other: &ToolPattern) -> bool {
        covers_segments(&self.segments, &other.segments, true)
    }
}

impl ToolPattern {
    /// The first segment, when it has no wildcard: only a pattern starting with the same
    /// literal segment, or with a wildcard, can cover this one.
    pub fn first_literal(&self) -> Option<String> {
        match self.segments.first() {
            Some(Segment::Glob(glob)) if !glob.contains('*') => Some(glob.clone()),
            _ => None,
        }
    }
}

/// Patterns indexed for the question "does any of them cover this one?", so checking a policy
/// of n rules costs about n lookups rather than n² comparisons. Values keep insertion order:
/// a query returns the earliest covering pattern.
#[derive(Debug)]
pub struct CoverIndex<T> {
    /// Patterns without a wildcard cover only themselves.
    exact: HashMap<String, (usize, T)>,
    /// Wildcard patterns whose first segment is literal, by that segment.
    by_first: HashMap<String, Vec<(usize, ToolPattern, T)>>,
    /// Patterns whose first segment is a wildcard.
    anywhere: Vec<(usize, ToolPattern, T)>,
    next: usize,
}

impl<T> Default for CoverIndex<T> {
    fn default() -> Self {
        CoverIndex {
            exact: HashMap::new(),
            by_first: HashMap::new(),
            anywhere: Vec::new(),
            next: 0,
        }
    }
}

impl<T> CoverIndex<T> {
    pub fn insert(&mut self, pattern: &ToolPattern, value: T) {
        let order = self.next;
        self.next += 1;
        if let Some(lit) = pattern.literal() {
            self.exact.entry(lit.to_string()).or_insert((order, value));
        } else if let Some(first) = pattern.first_literal() {
            self.by_first
                .entry(first)
                .or_default()
                .push((order, pattern.clone(), value));
        } else {
            self.anywhere.push((order, pattern.clone(), value));
        }
    }

    /// The earliest inserted pattern that covers `pattern`, with its value.
    pub fn covering(&self, pattern: &ToolPattern) -> Option<(&str, &T)> {
        let exact = pattern
            .literal()
            .and_then(|lit| self.exact.get_key_value(lit))
            .map(|(k, (order, v))| (*order, k.as_str(), v));
        let bucket = pattern
            .first_literal()
            .and_then(|first| self.by_first.get(&first))
            .into_iter()
            .flatten();
        let wild = bucket
            .chain(&self.anywhere)
            .filter(|(_, p, _)| p.covers(pattern))
            .map(|(order, p, v)| (*order, p.as_str(), v));
        exact
            .into_iter()
            .chain(wild)
            .min_by_key(|(order, ..)| *order)
            .map(|(_, p, v)| (p, v))
    }
}

/// Matches pattern segments against subject segments. With `subject_is_pattern`, the subject's
/// `*` and `**` stand for anything they could match, so only a wildcard can absorb them.
fn covers_segments(pat: &[Segment], subj: &[Segment], subject_is_pattern: bool) -> bool {
    match (pat.first(), subj.first()) {
        (None, None) => true,
        (None, Some(_)) => false,
        (Some(Segment::AnyDepth), _) => {
            // Absorb zero or more subject segments.
            (0..=subj.len()).any(|k| covers_segments(&pat[1..], &subj[k..], subject_is_pattern))
        }
        (Some(Segment::Glob(_)), None) => false,
        (Some(Segment::Glob(_)), Some(Segment::AnyDepth)) => false,
        (Some(Segment::Glob(p)), Some(Segment::Glob(s))) => {
            glob_covers(p.as_bytes(), s.as_bytes(), subject_is_pattern)
                && covers_segments(&pat[1..], &subj[1..], subject_is_pattern)
        }
    }
}

/// Matches pattern segments against the segments of a tool id.
fn matches_segments(pat: &[Segment], mut subj: std::str::Split<'_, char>) -> bool {
    match pat.first() {
        None => subj.next().is_none(),
        Some(Segment::AnyDepth) => loop {
            // Absorb zero or more subject segments.
            if matches_segments(&pat[1..], subj.clone()) {
                return true;
            }
            if subj.next().is_none() {
                return false;
            }
        },
        Some(Segment::Glob(p)) => match subj.next() {
            Some(s) => {
                glob_covers(p.as_bytes(), s.as_bytes(), false) && matches_segments(&pat[1..], subj)
            }
            None => false,
        },
    }
}

/// In-segment glob match over bytes (`*` is ASCII, so it never splits a UTF-8 character).
/// With `subject_is_pattern`, a `*` in the subject can only be absorbed by a `*` in the pattern.
fn glob_covers(pat: &[u8], subj: &[u8], subject_is_pattern: bool) -> bool {
    glob_core(pat, subj, |p, s| {
        p == s && !(subject_is_pattern && s == b'*')
    })
}

/// A whole-text `*` glob, optionally ignoring ASCII case: the one glob matcher shared by tool
/// patterns and the engine's `host`/`path` clauses.
pub fn glob_match(pat: &[u8], text: &[u8], fold_case: bool) -> bool {
    if fold_case {
        glob_core(pat, text, |p, t| p.eq_ignore_ascii_case(&t))
    } else {
        glob_core(pat, text, |p, t| p == t)
    }
}

/// Single-star backtracking: linear in practice, no recursion.
fn glob_core(pat: &[u8], subj: &[u8], same: impl Fn(u8, u8) -> bool) -> bool {
    let (mut p, mut s) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while s < subj.len() {
        if p < pat.len() && pat[p] == b'*' {
            star = Some((p, s));
            p += 1;
        } else if p < pat.len() && same(pat[p], subj[s]) {
            p += 1;
            s += 1;
        } else if let Some((sp, ss)) = star {
            p = sp + 1;
            s = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    pat[p..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pat(s: &str) -> ToolPattern {
        ToolPattern::parse(s).unwrap()
    }

    #[test]
    fn matching() {
        assert!(pat("stripe/refund").matches("stripe/refund"));
        assert!(!pat("stripe/refund").matches("stripe/refunds"));
        assert!(pat("fs/*/read").matches("fs/docs/read"));
        assert!(!pat("fs/*/read").matches("fs/docs/a/read"));
        assert!(pat("repo/**").matches("repo/a/b/c"));
        assert!(pat("repo/**").matches("repo/a"));
        assert!(pat("*").matches("anything/else"));
        assert!(pat("*").matches("x"));
        assert!(pat("stripe/*_read").matches("stripe/card_read"));
        assert!(!pat("github/issues/*").matches("github/issues"));
        assert!(pat("a/**/z").matches("a/z"));
        assert!(pat("a/**/z").matches("a/b/c/z"));
    }

    #[test]
    fn containment() {
        assert!(pat("shell/*").covers(&pat("shell/ls")));
        assert!(pat("*").covers(&pat("stripe/payouts")));
        assert!(pat("shell/**").covers(&pat("shell/*/x")));
        assert!(pat("a/*").covers(&pat("a/b*")));
        assert!(!pat("a/b*").covers(&pat("a/*")));
        assert!(!pat("shell/*").covers(&pat("shell/**")));
        assert!(!pat("shell/*").covers(&pat("shell/a/b")));
        assert!(!pat("stripe/refund").covers(&pat("stripe/*")));
        assert!(pat("*x*").covers(&pat("a*x*b")));
    }

    #[test]
    fn cover_index_finds_the_earliest_covering_pattern() {
        let mut idx = CoverIndex::default();
        for (i, p) in ["a/b", "c/*", "**", "c/d"].iter().enumerate() {
            idx.insert(&pat(p), i);
        }
        assert_eq!(idx.covering(&pat("a/b")), Some(("a/b", &0)));
        assert_eq!(idx.covering(&pat("c/x")), Some(("c/*", &1)));
        assert_eq!(idx.covering(&pat("z/*")), Some(("**", &2)));
        let mut narrow = CoverIndex::default();
        narrow.insert(&pat("a/b"), 0);
        narrow.insert(&pat("c/*"), 1);
        assert_eq!(narrow.covering(&pat("a/*")), None);
        assert_eq!(narrow.covering(&pat("c/**")), None);
        assert_eq!(narrow.covering(&pat("c/y")), Some(("c/*", &1)));
    }

    #[test]
    fn bad_patterns_are_explained() {
        assert!(
            ToolPattern::parse("a//b")
                .unwrap_err()
                .contains("empty segment")
        );
        assert!(
            ToolPattern::parse("a/b**")
                .unwrap_err()
                .contains("whole segment")
        );
        assert!(ToolPattern::parse("").is_err());
    }
}
