//! JSON the engine reads without owning it: a borrowed `serde_json` tree, or a [`Doc`] parsed
//! from request text in one pass, whose strings borrow the text.
//!
//! The parser reads values exactly as `serde_json` does (strings with escapes and numbers other
//! than short integers are handed to it; the tests compare the two). On anything else (a string
//! `serde_json` refuses, a NUL, deep nesting, duplicate keys, a syntax error) it gives up, and
//! the caller parses the whole text with `serde_json`, which also words the error.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::sync::LazyLock;

use serde_json::{Map, Number, Value};

/// A JSON value the engine reads: part of a `serde_json` tree or of a parsed document.
#[derive(Debug, Clone, Copy)]
pub struct JsonRef<'a>(Ref<'a>);

#[derive(Debug, Clone, Copy)]
enum Ref<'a> {
    Tree(&'a Value),
    Doc(&'a Doc<'a>, u32),
}

/// What a value is, with its parts.
pub(crate) enum Shape<'a> {
    Null,
    Bool(bool),
    Num(&'a Number),
    /// A string, and whether it is known to need no escaping in JSON text (which the
    /// canonical writer, reading [`View`]s, no longer asks here).
    Str(
        &'a str,
        #[expect(dead_code, reason = "kept for the readers that match on it")] bool,
    ),
    Array(Items<'a>),
    Object(Members<'a>),
}

/// An object member: its key and its value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Member<'a> {
    pub(crate) key: &'a str,
    pub(crate) value: JsonRef<'a>,
}

static NULL: Value = Value::Null;
static EMPTY_OBJECT: LazyLock<Value> = LazyLock::new(|| Value::Object(Map::new()));

impl<'a> JsonRef<'a> {
    pub fn tree(v: &'a Value) -> Self {
        JsonRef(Ref::Tree(v))
    }

    pub fn null() -> JsonRef<'static> {
        JsonRef(Ref::Tree(&NULL))
    }

    pub(crate) fn empty_object() -> JsonRef<'static> {
        JsonRef(Ref::Tree(&EMPTY_OBJECT))
    }

    /// Where the value is: for code that walks trees and documents each its own way (the
    /// canonical writer), without a dispatch at every step.
    pub(crate) fn source(self) -> Source<'a> {
        match self.0 {
            Ref::Tree(v) => Source::Tree(v),
            Ref::Doc(doc, i) => Source::Doc(doc, i),
        }
    }

    /// The `serde_json` value, when this is one.
    pub fn as_tree(self) -> Option<&'a Value> {
        match self.0 {
            Ref::Tree(v) => Some(v),
            Ref::Doc(..) => None,
        }
    }

    pub(crate) fn shape(self) -> Shape<'a> {
        match self.0 {
            Ref::Tree(v) => match v {
                Value::Null => Shape::Null,
                Value::Bool(b) => Shape::Bool(*b),
                Value::Number(n) => Shape::Num(n),
                Value::String(s) => Shape::Str(s, false),
                Value::Array(items) => Shape::Array(Items::Tree(items.iter())),
                Value::Object(map) => Shape::Object(Members::Tree(map.iter())),
            },
            Ref::Doc(doc, i) => doc.shape(i),
        }
    }

    pub fn is_null(self) -> bool {
        match self.0 {
            Ref::Tree(v) => v.is_null(),
            Ref::Doc(doc, i) => matches!(doc.node(i), Node::Null),
        }
    }

    pub fn is_object(self) -> bool {
        match self.0 {
            Ref::Tree(v) => v.is_object(),
            Ref::Doc(doc, i) => matches!(doc.node(i), Node::Object(..)),
        }
    }

    pub fn as_str(self) -> Option<&'a str> {
        match self.0 {
            Ref::Tree(v) => v.as_str(),
            Ref::Doc(doc, i) => match doc.node(i) {
                Node::Str(t) => Some(t),
                _ => None,
            },
        }
    }

    /// The value of member `key`, when this is an object that has one.
    pub fn get(self, key: &str) -> Option<JsonRef<'a>> {
        match self.0 {
            Ref::Tree(v) => v.as_object()?.get(key).map(JsonRef::tree),
            Ref::Doc(doc, i) => doc
                .members_of(i)
                .iter()
                .find(|m| m.key.as_bytes() == key.as_bytes())
                .map(|m| JsonRef(Ref::Doc(doc, m.value))),
        }
    }

    /// The value as a `serde_json` tree (copied).
    pub fn to_value(self) -> Value {
        match self.shape() {
            Shape::Null => Value::Null,
            Shape::Bool(b) => Value::Bool(b),
            Shape::Num(n) => Value::Number(n.clone()),
            Shape::Str(s, _) => Value::String(s.to_owned()),
            Shape::Array(items) => Value::Array(items.map(JsonRef::to_value).collect()),
            Shape::Object(members) => Value::Object(
                members
                    .map(|m| (m.key.to_owned(), m.value.to_value()))
                    .collect(),
            ),
        }
    }

    /// `a string`, `an object`, …: for messages.
    pub fn kind(self) -> &'static str {
        match self.shape() {
            Shape::Null => "null",
            Shape::Bool(_) => "a boolean",
            Shape::Num(_) => "a number",
            Shape::Str(..) => "a string",
            Shape::Array(_) => "an array",
            Shape::Object(_) => "an object",
        }
    }
}

/// A value in a tree, or node `.1` of a document.
pub(crate) enum Source<'a> {
    Tree(&'a Value),
    Doc(&'a Doc<'a>, u32),
}

/// A document's value with its parts as slices (what [`Doc::view`] gives).
pub(crate) enum View<'a> {
    Null,
    Bool(bool),
    Num(&'a Number),
    /// A string, and whether it is known to need no escaping in JSON text.
    Str(&'a str, bool),
    /// The nodes of the elements.
    Array(&'a [u32]),
    /// The members, in the order of the UTF-16 code units of their keys.
    Object(&'a [Key<'a>]),
}

/// The elements of an array.
#[derive(Debug, Clone)]
pub(crate) enum Items<'a> {
    Tree(std::slice::Iter<'a, Value>),
    Doc(&'a Doc<'a>, std::slice::Iter<'a, u32>),
}

impl<'a> Iterator for Items<'a> {
    type Item = JsonRef<'a>;

    fn next(&mut self) -> Option<JsonRef<'a>> {
        match self {
            Items::Tree(it) => it.next().map(JsonRef::tree),
            Items::Doc(doc, it) => it.next().map(|&i| JsonRef(Ref::Doc(doc, i))),
        }
    }
}

/// The members of an object: in the map's order for a tree (bytewise by key), in the order of
/// the UTF-16 code units of their keys for a document.
#[derive(Debug, Clone)]
pub(crate) enum Members<'a> {
    Tree(serde_json::map::Iter<'a>),
    Doc(&'a Doc<'a>, std::slice::Iter<'a, Key<'a>>),
}

impl<'a> Iterator for Members<'a> {
    type Item = Member<'a>;

    fn next(&mut self) -> Option<Member<'a>> {
        match self {
            Members::Tree(it) => it.next().map(|(k, v)| Member {
                key: k,
                value: JsonRef::tree(v),
            }),
            Members::Doc(doc, it) => it.next().map(|m| Member {
                key: &m.key,
                value: JsonRef(Ref::Doc(doc, m.value)),
            }),
        }
    }
}

/// True when `s` holds a character at or above U+E000, the only ones whose UTF-16 order differs
/// from their code point order (a supplementary character's surrogates sort below
/// U+E000–U+FFFF). UTF-8 lead bytes of such characters are 0xEE and above.
pub(crate) fn is_high(s: &str) -> bool {
    s.bytes().any(|b| b >= 0xEE)
}

/// The order of RFC 8785 object members: by the UTF-16 code units of their keys.
pub(crate) fn utf16_cmp(a: &str, b: &str) -> Ordering {
    if is_high(a) || is_high(b) {
        a.encode_utf16().cmp(b.encode_utf16())
    } else {
        bytes_cmp(a.as_bytes(), b.as_bytes())
    }
}

/// Bytewise order; keys mostly differ early, so this beats a `memcmp` call.
pub(crate) fn bytes_cmp(a: &[u8], b: &[u8]) -> Ordering {
    for (x, y) in a.iter().zip(b) {
        if x != y {
            return x.cmp(y);
        }
    }
    a.len().cmp(&b.len())
}

/// An object member of a document.
#[derive(Debug)]
pub(crate) struct Key<'t> {
    key: Text<'t>,
    value: u32,
}

impl<'t> Key<'t> {
    pub(crate) fn name(&self) -> &str {
        &self.key
    }

    /// True when the key needs no escaping in JSON text.
    pub(crate) fn plain(&self) -> bool {
        is_plain(&self.key)
    }

    /// Its value's node.
    pub(crate) fn value(&self) -> u32 {
        self.value
    }
}

/// A string of a document: borrowed from the text when it has no escapes there, and so needs
/// none in JSON text; decoded otherwise. (A flag beside it would be stored as a byte and read
/// back in a wider load when the string is moved: a store-forwarding stall per string.)
type Text<'t> = Cow<'t, str>;

/// True when `t` needs no escaping in JSON text.
fn is_plain(t: &Text<'_>) -> bool {
    matches!(t, Cow::Borrowed(_))
}

#[derive(Debug)]
enum Node<'t> {
    Null,
    Bool(bool),
    Num(Number),
    Str(Text<'t>),
    /// A range of `Doc::items`.
    Array(u32, u32),
    /// A range of `Doc::members`, sorted by the UTF-16 code units of the keys.
    Object(u32, u32),
}

/// A JSON text parsed into one flat structure: values in `nodes` (the root first), the
/// elements of every array and the members of every object each in one run of `items` and
/// `members`.
#[derive(Debug, Default)]
pub(crate) struct Doc<'t> {
    nodes: Vec<Node<'t>>,
    items: Vec<u32>,
    members: Vec<Key<'t>>,
}

impl<'t> Doc<'t> {
    /// Parses `text`, one JSON object, or gives up (see the module's comment). No container
    /// may nest deeper than `max_depth` (the root is at depth 1) and no string or key may hold
    /// a NUL.
    pub(crate) fn parse(text: &'t str, max_depth: usize) -> Option<Doc<'t>> {
        let mut p = Parser {
            text,
            at: 0,
            max_depth: max_depth.min(MAX_DEPTH),
            doc: Doc {
                // Sized to stay in malloc's per-thread cache (up to 1 KiB) for common requests.
                nodes: Vec::with_capacity(text.len() / 16),
                items: Vec::new(),
                members: Vec::with_capacity(text.len() / 16),
            },
            item_stack: Vec::new(),
            member_stack: Vec::with_capacity(16),
        };
        p.skip_ws();
        if p.peek() != Some(b'{') {
            return None;
        }
        p.value(0)?;
        p.skip_ws();
        (p.at == text.len()).then_some(p.doc)
    }

    fn node(&self, i: u32) -> &Node<'t> {
        self.nodes.get(i as usize).unwrap_or(&Node::Null)
    }

    /// The members of node `i` (none unless it is an object).
    pub(crate) fn members_of(&self, i: u32) -> &[Key<'t>] {
        match self.node(i) {
            Node::Object(a, b) => self
                .members
                .get(*a as usize..*b as usize)
                .unwrap_or_default(),
            _ => &[],
        }
    }

    /// The root's members: (key, value).
    pub(crate) fn fields(&self) -> impl Iterator<Item = (&str, JsonRef<'_>)> {
        self.members_of(0)
            .iter()
            .map(|m| (m.key.as_ref(), JsonRef(Ref::Doc(self, m.value))))
    }

    /// Node `i` with its parts.
    pub(crate) fn view(&self, i: u32) -> View<'_> {
        let range = |a: u32, b: u32| a as usize..b as usize;
        match self.node(i) {
            Node::Null => View::Null,
            Node::Bool(b) => View::Bool(*b),
            Node::Num(n) => View::Num(n),
            Node::Str(t) => View::Str(t, is_plain(t)),
            Node::Array(a, b) => View::Array(self.items.get(range(*a, *b)).unwrap_or_default()),
            Node::Object(a, b) => View::Object(self.members.get(range(*a, *b)).unwrap_or_default()),
        }
    }

    fn shape<'a>(&'a self, i: u32) -> Shape<'a> {
        let range = |a: u32, b: u32| a as usize..b as usize;
        match self.node(i) {
            Node::Null => Shape::Null,
            Node::Bool(b) => Shape::Bool(*b),
            Node::Num(n) => Shape::Num(n),
            Node::Str(t) => Shape::Str(t, is_plain(t)),
            Node::Array(a, b) => Shape::Array(Items::Doc(
                self,
                self.items.get(range(*a, *b)).unwrap_or_default().iter(),
            )),
            Node::Object(a, b) => Shape::Object(Members::Doc(
                self,
                self.members.get(range(*a, *b)).unwrap_or_default().iter(),
            )),
        }
    }
}

/// The index of the first `"`, `\\` or control character in `bytes` at or after `i` (or the
/// length): eight bytes at a time. In each test the lowest flagged byte is a true match
/// (borrows only flag bytes above one), so the lowest of all is the first.
pub(crate) fn special(bytes: &[u8], i: usize) -> usize {
    scan(bytes, i).0
}

/// [`special`], and whether a byte before the one found is not ASCII.
#[inline(always)]
fn scan(bytes: &[u8], mut i: usize) -> (usize, bool) {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut wide = 0;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        let quote = x ^ (ONES * u64::from(b'"'));
        let slash = x ^ (ONES * u64::from(b'\\'));
        let zero = |v: u64| v.wrapping_sub(ONES) & !v;
        let found = (zero(quote) | zero(slash) | (x.wrapping_sub(ONES * 0x20) & !x)) & HIGH;
        // The high bits of the bytes below the first one found (all of them if none is).
        let below = (found & found.wrapping_neg()).wrapping_sub(1);
        wide |= x & HIGH & below;
        if found != 0 {
            return (i + (found.trailing_zeros() / 8) as usize, wide != 0);
        }
        i += 8;
    }
    while let Some(&b) = bytes.get(i) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            break;
        }
        wide |= u64::from(b >= 0x80);
        i += 1;
    }
    (i, wide != 0)
}

/// Sorts the members of an object in the order of the UTF-16 code units of their keys (their
/// bytes unless one holds a character at or above U+E000: `high`); `None` when two keys are
/// equal (readers differ on which one wins, so the parser gives up).
fn sort_keys(members: &mut [Key<'_>], high: bool) -> Option<()> {
    if !high && members.len() <= 16 {
        return insertion_sort(members);
    }
    let order = |a: &Key<'_>, b: &Key<'_>| {
        if high {
            a.key.encode_utf16().cmp(b.key.encode_utf16())
        } else {
            bytes_cmp(a.key.as_bytes(), b.key.as_bytes())
        }
    };
    members.sort_unstable_by(order);
    // Sorted, duplicates are neighbours.
    if members.windows(2).any(|w| order(&w[0], &w[1]).is_eq()) {
        return None;
    }
    Some(())
}

/// [`sort_keys`] by the bytes of the keys, for a few members (such as the fields of a request,
/// which senders order as they like): no call per comparison.
fn insertion_sort(members: &mut [Key<'_>]) -> Option<()> {
    for i in 1..members.len() {
        let mut j = i;
        while j > 0 {
            let (a, b) = (members.get(j - 1)?, members.get(j)?);
            match bytes_cmp(a.key.as_bytes(), b.key.as_bytes()) {
                Ordering::Less => break,
                Ordering::Equal => return None,
                Ordering::Greater => members.swap(j - 1, j),
            }
            j -= 1;
        }
    }
    Some(())
}

/// Deeper documents are left to `serde_json`, whose own limit is 128.
const MAX_DEPTH: usize = 100;

struct Parser<'t> {
    text: &'t str,
    at: usize,
    max_depth: usize,
    doc: Doc<'t>,
    /// Elements and members of the containers still open.
    item_stack: Vec<u32>,
    member_stack: Vec<Key<'t>>,
}

impl<'t> Parser<'t> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.at += 1;
        }
    }

    /// Skips whitespace, then expects `b`.
    fn expect(&mut self, b: u8) -> Option<()> {
        self.skip_ws();
        (self.peek() == Some(b)).then(|| self.at += 1)
    }

    fn push(&mut self, node: Node<'t>) -> Option<u32> {
        let i = u32::try_from(self.doc.nodes.len()).ok()?;
        self.doc.nodes.push(node);
        Some(i)
    }

    /// A value at `depth` (its container's); its index in `nodes`.
    fn value(&mut self, depth: usize) -> Option<u32> {
        self.skip_ws();
        let node = match self.peek()? {
            b'{' => return self.object(depth + 1),
            b'[' => return self.array(depth + 1),
            b'"' => Node::Str(self.string()?),
            b't' => self.literal("true", Node::Bool(true))?,
            b'f' => self.literal("false", Node::Bool(false))?,
            b'n' => self.literal("null", Node::Null)?,
            b'-' | b'0'..=b'9' => Node::Num(self.number()?),
            _ => return None,
        };
        self.push(node)
    }

    fn literal(&mut self, word: &str, node: Node<'t>) -> Option<Node<'t>> {
        let rest = self.text.as_bytes().get(self.at..)?;
        rest.starts_with(word.as_bytes()).then(|| {
            self.at += word.len();
            node
        })
    }

    fn object(&mut self, depth: usize) -> Option<u32> {
        if depth > self.max_depth {
            return None;
        }
        self.at += 1;
        let index = self.push(Node::Null)?;
        let mark = self.member_stack.len();
        // The keys so far came in the order of their bytes, none holding a character at or
        // above U+E000 (see [`is_high`]): then they are in RFC 8785 order already, and
        // distinct. Most objects come so.
        let (mut ordered, mut high) = (true, false);
        self.skip_ws();
        if self.peek() == Some(b'}') {
            self.at += 1;
        } else {
            loop {
                self.skip_ws();
                if self.peek() != Some(b'"') {
                    return None;
                }
                let (key, wide) = self.key()?;
                self.expect(b':')?;
                let value = self.value(depth)?;
                high |= wide && is_high(&key);
                ordered &= self.member_stack.get(mark..).is_none_or(|keys| {
                    keys.last()
                        .is_none_or(|last| bytes_cmp(last.key.as_bytes(), key.as_bytes()).is_lt())
                });
                self.member_stack.push(Key { key, value });
                self.skip_ws();
                match self.peek()? {
                    b',' => self.at += 1,
                    b'}' => {
                        self.at += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        if high || !ordered {
            sort_keys(self.member_stack.get_mut(mark..)?, high)?;
        }
        let start = u32::try_from(self.doc.members.len()).ok()?;
        self.doc.members.extend(self.member_stack.drain(mark..));
        let end = u32::try_from(self.doc.members.len()).ok()?;
        *self.doc.nodes.get_mut(index as usize)? = Node::Object(start, end);
        Some(index)
    }

    fn array(&mut self, depth: usize) -> Option<u32> {
        if depth > self.max_depth {
            return None;
        }
        self.at += 1;
        let index = self.push(Node::Null)?;
        let mark = self.item_stack.len();
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.at += 1;
        } else {
            loop {
                let item = self.value(depth)?;
                self.item_stack.push(item);
                self.skip_ws();
                match self.peek()? {
                    b',' => self.at += 1,
                    b']' => {
                        self.at += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        let start = u32::try_from(self.doc.items.len()).ok()?;
        self.doc.items.extend(self.item_stack.drain(mark..));
        let end = u32::try_from(self.doc.items.len()).ok()?;
        *self.doc.nodes.get_mut(index as usize)? = Node::Array(start, end);
        Some(index)
    }

    /// A key at `self.at` (its opening quote), and whether it may hold a character that is not
    /// ASCII.
    #[inline(always)]
    fn key(&mut self) -> Option<(Text<'t>, bool)> {
        let start = self.at + 1;
        let (i, wide) = scan(self.text.as_bytes(), start);
        match self.text.as_bytes().get(i)? {
            b'"' => {}
            b'\\' => return self.escaped_string().map(|key| (key, true)),
            _ => return None,
        }
        self.at = i + 1;
        Some((Cow::Borrowed(self.text.get(start..i)?), wide))
    }

    /// A string at `self.at` (its opening quote). Inlined: returned through memory, a `Text`
    /// costs a store-forwarding stall per string.
    #[inline(always)]
    fn string(&mut self) -> Option<Text<'t>> {
        let start = self.at + 1;
        let i = special(self.text.as_bytes(), start);
        match self.text.as_bytes().get(i)? {
            b'"' => {}
            b'\\' => return self.escaped_string(),
            _ => return None,
        }
        self.at = i + 1;
        Some(Cow::Borrowed(self.text.get(start..i)?))
    }

    /// A string with escapes, decoded by `serde_json` (surrogate pairs and all).
    #[cold]
    fn escaped_string(&mut self) -> Option<Text<'t>> {
        let bytes = self.text.as_bytes();
        let mut i = self.at + 1;
        loop {
            match *bytes.get(i)? {
                b'"' => break,
                b'\\' => i += 2,
                0..=0x1f => return None,
                _ => i += 1,
            }
        }
        let s: String = serde_json::from_str(self.text.get(self.at..=i)?).ok()?;
        if s.contains('\0') {
            return None;
        }
        self.at = i + 1;
        Some(Cow::Owned(s))
    }

    /// A number as `serde_json` reads it, if its double is exact ([`crate::car::is_exact`]):
    /// the tree reader refuses the others, naming where they are.
    fn number(&mut self) -> Option<Number> {
        self.any_number().filter(crate::car::is_exact)
    }

    /// A number as `serde_json` reads it: short integers here, the rest by `serde_json`.
    fn any_number(&mut self) -> Option<Number> {
        let bytes = self.text.as_bytes();
        let start = self.at;
        let negative = bytes.get(start) == Some(&b'-');
        let digits = start + usize::from(negative);
        let mut i = digits;
        while let Some(b'0'..=b'9') = bytes.get(i) {
            i += 1;
        }
        let int_end = i;
        while let Some(b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-') = bytes.get(i) {
            i += 1;
        }
        self.at = i;
        let int = bytes.get(digits..int_end)?;
        // Up to 18 digits fit an `i64`; a leading zero, `-0`, fractions and exponents go to
        // `serde_json`.
        if i == int_end && (1..=18).contains(&int.len()) && (int[0] != b'0' || int.len() == 1) {
            let n = int.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
            if !negative {
                return Some(Number::from(n));
            }
            if n != 0 {
                return i64::try_from(n).ok().map(|n| Number::from(-n));
            }
        }
        serde_json::from_str(self.text.get(start..i)?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn parsed(text: &str) -> Option<Value> {
        Doc::parse(text, 64).map(|doc| JsonRef(Ref::Doc(&doc, 0)).to_value())
    }

    #[test]
    fn reads_what_serde_json_reads() {
        let text = r#" { "b" : [1, -2, 3.5, 1e2, -0, 9007199254740992, -9007199254740992,
            true, false, null, {}], "a": {"x\u00e9": "\ud83d\ude00\n", "": ""}, "\ue000": 0 } "#;
        let v: Value = serde_json::from_str(text).unwrap();
        assert_eq!(parsed(text), Some(v));
    }

    #[test]
    fn gives_up_on_what_it_does_not_take() {
        for text in [
            "",
            "[1]",
            "{",
            r#"{"a":1,"a":2}"#,
            r#"{"a":1,"\u0061":2}"#,
            r#"{"a":"\u0000"}"#,
            r#"{"a":"\ud800"}"#,
            r#"{"a":01}"#,
            r#"{"a":1e400}"#,
            r#"{"a":9007199254740993}"#,
            r#"{"a":18446744073709551615}"#,
            r#"{"a":123456789012345678901}"#,
            r#"{"a":-1e16}"#,
            "{\"a\":\"\t\"}",
            r#"{"a":1,}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":tru}"#,
            r#"{} x"#,
            r#"{"a":{"b":{"c":{}}}}"#,
        ] {
            let deep = text.starts_with(r#"{"a":{"b""#);
            let doc = Doc::parse(text, if deep { 3 } else { 64 });
            assert!(doc.is_none(), "{text}");
        }
    }

    fn inexact(v: &Value) -> bool {
        match v {
            Value::Number(n) => !crate::car::is_exact(n),
            Value::Array(items) => items.iter().any(inexact),
            Value::Object(map) => map.values().any(inexact),
            _ => false,
        }
    }

    fn special_slowly(bytes: &[u8], i: usize) -> usize {
        (i..bytes.len())
            .find(|&j| matches!(bytes[j], b'"' | b'\\' | 0..=0x1f))
            .unwrap_or(bytes.len())
    }

    fn value() -> impl Strategy<Value = Value> {
        let text = "[a-c\u{0}-\u{1f}\"\\\\/\u{7f}\u{e9}\u{e000}\u{ffff}\u{10000}]{0,6}";
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
            text.prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::btree_map(text, inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn special_finds_the_first_special_byte(s in "[a\"\\\\\u{1}\u{1f} \u{e9}\u{10000}]{0,40}", i in 0usize..8) {
            let i = i.min(s.len());
            prop_assert_eq!(special(s.as_bytes(), i), special_slowly(s.as_bytes(), i));
        }

        #[test]
        fn a_document_is_the_value_serde_json_reads(v in value(), pretty in any::<bool>()) {
            let v = json!({"v": v});
            let text = if pretty { serde_json::to_string_pretty(&v) } else { serde_json::to_string(&v) }.unwrap();
            let nul = text.contains("\\u0000");
            match parsed(&text) {
                Some(doc) => prop_assert_eq!(doc, v),
                None => prop_assert!(nul || inexact(&v), "refused {}", text),
            }
        }
    }
}
