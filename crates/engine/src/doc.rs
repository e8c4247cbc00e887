//! JSON the engine reads without owning it: a borrowed `serde_json` tree, or a [`Doc`] parsed
//! from request text in one pass, whose strings borrow the text.
//!
//! The parser reads values exactly as `serde_json` does (strings with escapes and numbers other
//! than short integers are handed to it; the tests compare the two). On anything else (a string
//! `serde_json` refuses, a NUL, deep nesting, duplicate keys, a syntax error) it gives up, and
//! the caller parses the whole text with `serde_json`, which also words the error.

use std::cell::{Cell, OnceCell};
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

    /// Node `i` of `doc`.
    pub(crate) fn node(doc: &'a Doc<'a>, i: u32) -> Self {
        JsonRef(Ref::Doc(doc, i))
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
                Node::Str(t) | Node::Escaped(t) => Some(t),
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
                key: m.key,
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
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key<'t> {
    key: &'t str,
    value: u32,
    /// The value's byte range in the text.
    start: u32,
    end: u32,
    /// True when the key had no escapes in the text, and so needs none in JSON text.
    plain: bool,
    /// True when the value's text is its RFC 8785 text (see [`Parser::messy`]).
    canonical: bool,
}

impl<'t> Key<'t> {
    pub(crate) fn name(&self) -> &str {
        self.key
    }

    /// True when the key needs no escaping in JSON text.
    pub(crate) fn plain(&self) -> bool {
        self.plain
    }

    /// Its value's node.
    pub(crate) fn value(&self) -> u32 {
        self.value
    }

    /// Its value's byte range in the text.
    pub(crate) fn span(&self) -> std::ops::Range<usize> {
        self.start as usize..self.end as usize
    }
}

/// Where a [`Doc`] keeps the strings it decoded (those with escapes in the text), so that, like
/// the others, they outlive it and nothing in it needs dropping: made before the document,
/// which borrows it. Nothing is allocated for a text without escapes.
#[derive(Debug, Default)]
pub(crate) struct Decoded(OnceCell<Box<[OnceCell<String>]>>);

/// A value of a document. Nothing in it needs dropping (its strings are borrowed from the
/// text or from [`Decoded`]): emptying a document's vectors, to reuse them, costs nothing.
#[derive(Debug)]
enum Node<'t> {
    Null,
    Bool(bool),
    Num(Number),
    /// A string without escapes in the text, and so needing none in JSON text.
    Str(&'t str),
    /// A string that had escapes in the text, decoded.
    Escaped(&'t str),
    /// A range of `Doc::items`.
    Array(u32, u32),
    /// A range of `Doc::members`, sorted by the UTF-16 code units of the keys; the root's, read
    /// by field name only ([`Doc::root_members`]), are in the order of the text.
    Object(u32, u32),
}

/// A JSON text parsed into one flat structure: values in `nodes` (a container after what it
/// holds, so the root last: `root`), the
/// elements of every array and the members of every object each in one run of `items` and
/// `members`. Its vectors are taken from those kept on the thread ([`Vectors`]) and handed
/// back when it is dropped.
#[derive(Debug)]
pub(crate) struct Doc<'t> {
    text: &'t str,
    vectors: Vectors<'t>,
    root: u32,
}

impl Drop for Doc<'_> {
    fn drop(&mut self) {
        std::mem::take(&mut self.vectors).keep();
    }
}

/// A document's vectors.
#[derive(Debug, Default)]
struct Vectors<'t> {
    nodes: Vec<Node<'t>>,
    items: Vec<u32>,
    members: Vec<Key<'t>>,
}

/// The parser's stacks of what is read but not yet placed.
#[derive(Debug, Default)]
struct Stacks<'t> {
    /// Elements of the arrays still open.
    items: Vec<u32>,
    /// Members of the objects still open, outer ones first: each is copied once, when its
    /// object closes (kept in `doc.members` instead, they would be moved past those of the
    /// open objects around every closing one).
    members: Vec<Key<'t>>,
}

// The vectors of the last document read on each thread, and of its parser's stacks, empty,
// for the next one: reading a request then allocates nothing (three allocations and their
// frees were about 300 instructions, 3% of a decision). Vectors grown past `MOST_KEPT`
// elements are freed instead, so a thread holds on to a few KiB for common requests and
// about 100 KiB at most (five vectors of up to 1,024 elements of 4 to 32 bytes).
thread_local! {
    static SPARE_VECTORS: Cell<Vectors<'static>> = const { Cell::new(Vectors::NONE) };
    static SPARE_STACKS: Cell<Stacks<'static>> = const { Cell::new(Stacks::NONE) };
}

/// Enough for a request of about 16 KiB.
const MOST_KEPT: usize = 1024;

impl Vectors<'_> {
    const NONE: Vectors<'static> = Vectors {
        nodes: Vec::new(),
        items: Vec::new(),
        members: Vec::new(),
    };
}

impl Stacks<'_> {
    const NONE: Stacks<'static> = Stacks {
        items: Vec::new(),
        members: Vec::new(),
    };
}

impl<'t> Vectors<'t> {
    /// Those kept on this thread (empty ones when there are none), room made for about `n`
    /// values and members.
    fn spare(n: usize) -> Self {
        let spare = SPARE_VECTORS.try_with(Cell::take).unwrap_or_default();
        let mut v = Vectors {
            nodes: relabelled(spare.nodes),
            items: spare.items,
            members: relabelled(spare.members),
        };
        v.nodes.reserve(n);
        v.members.reserve(n);
        v
    }

    fn keep(self) {
        let spare = Vectors {
            nodes: relabelled(emptied(self.nodes)),
            items: emptied(self.items),
            members: relabelled(emptied(self.members)),
        };
        // Fails only while the thread is being torn down: the vectors are then freed.
        let _ = SPARE_VECTORS.try_with(|cell| cell.set(spare));
    }
}

impl<'t> Stacks<'t> {
    /// [`Vectors::spare`] for the stacks.
    fn spare(n: usize) -> Self {
        let spare = SPARE_STACKS.try_with(Cell::take).unwrap_or_default();
        let mut s = Stacks {
            items: spare.items,
            members: relabelled(spare.members),
        };
        s.members.reserve(n);
        s
    }

    fn keep(self) {
        let spare = Stacks {
            items: emptied(self.items),
            members: relabelled(emptied(self.members)),
        };
        let _ = SPARE_STACKS.try_with(|cell| cell.set(spare));
    }
}

/// Empty vector `v` as a vector of `U`, the same type under another lifetime, on the same
/// allocation: the standard library collects a vector's `into_iter` in place when the layouts
/// match (were it not to, this would allocate, nothing worse).
fn relabelled<T, U>(v: Vec<T>) -> Vec<U> {
    v.into_iter().filter_map(|_| None).collect()
}

/// `v`, emptied, or a new vector if it grew past [`MOST_KEPT`].
fn emptied<T>(mut v: Vec<T>) -> Vec<T> {
    if v.capacity() > MOST_KEPT {
        return Vec::new();
    }
    v.clear();
    v
}

impl<'t> Doc<'t> {
    /// Parses `text`, one JSON object, or gives up (see the module's comment). No container
    /// may nest deeper than `max_depth` (the root is at depth 1) and no string or key may hold
    /// a NUL.
    pub(crate) fn parse(text: &'t str, decoded: &'t Decoded, max_depth: usize) -> Option<Doc<'t>> {
        // Every value, item and member takes a byte of the text at least: below this, their
        // indices fit a `u32` (the parser counts on it, unchecked).
        if u32::try_from(text.len()).is_err() {
            return None;
        }
        // A byte in 16 is a value or a member, most often; more are room made as they come.
        let n = text.len() / 16;
        let mut p = Parser {
            text,
            decoded,
            decoded_count: 0,
            messy: 0,
            max_depth: max_depth.min(MAX_DEPTH),
            doc: Vectors::spare(n),
            stacks: Stacks::spare(n),
        };
        let root = p.root();
        p.stacks.keep();
        match root {
            Some(root) => Some(Doc {
                text,
                vectors: p.doc,
                root,
            }),
            None => {
                p.doc.keep();
                None
            }
        }
    }

    fn node(&self, i: u32) -> &Node<'t> {
        self.vectors.nodes.get(i as usize).unwrap_or(&Node::Null)
    }

    /// The members of node `i` (none unless it is an object).
    pub(crate) fn members_of(&self, i: u32) -> &[Key<'t>] {
        match self.node(i) {
            Node::Object(a, b) => self
                .vectors
                .members
                .get(*a as usize..*b as usize)
                .unwrap_or_default(),
            _ => &[],
        }
    }

    /// The root's members, in the order of the text.
    pub(crate) fn root_members(&self) -> &[Key<'t>] {
        self.members_of(self.root)
    }

    /// The text of root member `m`'s value when it is exactly its RFC 8785 text, and where
    /// it starts in the request text.
    pub(crate) fn canonical_text(&self, m: &Key<'_>) -> Option<(&'t str, usize)> {
        if !m.canonical {
            return None;
        }
        Some((self.text.get(m.span())?, m.start as usize))
    }

    /// The root's members: (key, value), in the order of the text.
    #[cfg(test)]
    pub(crate) fn fields(&self) -> impl Iterator<Item = (&str, JsonRef<'_>)> {
        self.root_members()
            .iter()
            .map(|m| (m.key, JsonRef(Ref::Doc(self, m.value))))
    }

    /// Node `i` with its parts.
    pub(crate) fn view(&self, i: u32) -> View<'_> {
        let range = |a: u32, b: u32| a as usize..b as usize;
        match self.node(i) {
            Node::Null => View::Null,
            Node::Bool(b) => View::Bool(*b),
            Node::Num(n) => View::Num(n),
            Node::Str(t) => View::Str(t, true),
            Node::Escaped(t) => View::Str(t, false),
            Node::Array(a, b) => {
                View::Array(self.vectors.items.get(range(*a, *b)).unwrap_or_default())
            }
            Node::Object(a, b) => {
                View::Object(self.vectors.members.get(range(*a, *b)).unwrap_or_default())
            }
        }
    }

    fn shape<'a>(&'a self, i: u32) -> Shape<'a> {
        let range = |a: u32, b: u32| a as usize..b as usize;
        match self.node(i) {
            Node::Null => Shape::Null,
            Node::Bool(b) => Shape::Bool(*b),
            Node::Num(n) => Shape::Num(n),
            Node::Str(t) => Shape::Str(t, true),
            Node::Escaped(t) => Shape::Str(t, false),
            Node::Array(a, b) => Shape::Array(Items::Doc(
                self,
                self.vectors
                    .items
                    .get(range(*a, *b))
                    .unwrap_or_default()
                    .iter(),
            )),
            Node::Object(a, b) => Shape::Object(Members::Doc(
                self,
                self.vectors
                    .members
                    .get(range(*a, *b))
                    .unwrap_or_default()
                    .iter(),
            )),
        }
    }
}

/// The index of the first `"`, `\\` or control character in `bytes` at or after `i` (or the
/// length), found eight bytes at a time. In each test the lowest flagged
/// byte is a true match (borrows only flag bytes above one), so the lowest of all is the first.
#[inline(always)]
fn find_special(bytes: &[u8], mut i: usize) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = bytes.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word);
        // Bytes that are `"`, `\\` or below 0x20 get their high bit set. Flipping bit 1 takes
        // `"` to 0x20 and keeps the bytes below 0x20 there, so one test, below 0x21, finds both.
        // (`!x` stands for the complement of `x ^ 0x02…` and of `x ^ b'\\'` too: they differ
        // only below the high bit.)
        let quote_or_control = (x ^ (ONES * 0x02)).wrapping_sub(ONES * 0x21);
        let slash = (x ^ (ONES * u64::from(b'\\'))).wrapping_sub(ONES);
        let found = (quote_or_control | slash) & !x & HIGH;
        if found != 0 {
            return i + (found.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&b) = bytes.get(i) {
        if b == b'"' || b == b'\\' || b < 0x20 {
            break;
        }
        i += 1;
    }
    i
}

/// True when key `a` sorts before key `b` in the order of the UTF-16 code units (RFC 8785),
/// judged from their bytes; false too when that order is not their bytes' order there. Byte
/// order is code point order, which UTF-16 keeps except between a character in
/// U+E000–U+FFFF (lead byte 0xEE or 0xEF) and a supplementary one (0xF0–0xF4), whose
/// surrogates sort below it; the first differing bytes show whether that is the case.
#[inline(always)]
fn utf16_before(a: &[u8], b: &[u8]) -> bool {
    for (&x, &y) in a.iter().zip(b) {
        if x != y {
            let mixed = x.min(y) >= 0xEE && (x >= 0xF0) != (y >= 0xF0);
            return x < y && !mixed;
        }
    }
    a.len() < b.len()
}

/// True when the keys are distinct and in RFC 8785 order (see [`utf16_before`]), as most
/// objects come: then they need no sorting. Checked once the object is read, not as its keys
/// come, which would keep the previous key live across the reading of every value.
#[inline(always)]
fn keys_in_order(members: &[Key<'_>]) -> bool {
    members
        .windows(2)
        .all(|w| matches!(w, [a, b] if utf16_before(a.key.as_bytes(), b.key.as_bytes())))
}

/// Sorts the members of an object in the order of the UTF-16 code units of their keys; `None`
/// when two keys are equal (readers differ on which one wins, so the parser gives up).
fn sort_keys(members: &mut [Key<'_>]) -> Option<()> {
    // Their bytes' order, unless a key holds a character at or above U+E000.
    let high = members.iter().any(|m| is_high(m.key));
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

/// `None` when two keys are equal, leaving the members in their order: for the fields of a
/// request, which senders order as they like (comparing them costs less than sorting them).
fn distinct(members: &mut [Key<'_>]) -> Option<()> {
    if members.len() > 32 {
        return sort_keys(members);
    }
    // A bit per key from its length and its ends (the request's own fields fall on distinct
    // bits): only a key whose bit is taken is compared with the others.
    let mut seen = 0u64;
    for (i, m) in members.iter().enumerate() {
        let k = m.key.as_bytes();
        let (first, last) = (k.first().copied(), k.last().copied());
        let h = (u32::from(first.unwrap_or(0)) ^ (u32::from(last.unwrap_or(0)) * 3))
            .wrapping_add(k.len() as u32 * 5);
        let bit = 1u64 << (h & 63);
        if seen & bit != 0 && repeated(members, i)? {
            return None;
        }
        seen |= bit;
    }
    Some(())
}

/// True when member `i`'s key is one of those before it. Apart, and cold: inlined, its loop
/// kept the bits' loop short of registers.
#[cold]
fn repeated(members: &[Key<'_>], i: usize) -> Option<bool> {
    let (m, before) = members.get(..=i)?.split_last()?;
    Some(before.iter().any(|o| o.key.as_bytes() == m.key.as_bytes()))
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

fn token_after_ws(bytes: &[u8], at: usize) -> Option<(u8, usize)> {
    let at = skip_ws(bytes, at);
    Some((*bytes.get(at)?, at))
}

/// The position of the first byte at or after `at` that is not whitespace (or the length).
fn skip_ws(bytes: &[u8], mut at: usize) -> usize {
    while let Some(b' ' | b'\n' | b'\r' | b'\t') = bytes.get(at) {
        at += 1;
    }
    at
}

/// The end of the string with escapes whose opening quote is at `at`: the position of its
/// closing quote.
fn escaped_end(bytes: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    loop {
        match *bytes.get(i)? {
            b'"' => return Some(i),
            b'\\' => i += 2,
            0..=0x1f => return None,
            _ => i += 1,
        }
    }
}

/// `true`, `false` or `null` at `at`, and the position after it. Four bytes compared at once:
/// `null` is common (fields the sender left empty).
#[inline(always)]
fn literal_at(bytes: &[u8], at: usize) -> Option<(Node<'static>, usize)> {
    let rest = bytes.get(at..)?;
    match rest.first_chunk::<4>()? {
        b"null" => Some((Node::Null, at + 4)),
        b"true" => Some((Node::Bool(true), at + 4)),
        b"fals" if rest.get(4) == Some(&b'e') => Some((Node::Bool(false), at + 5)),
        _ => None,
    }
}

/// The number at `at` as `serde_json` reads it, if its double is exact
/// ([`crate::car::is_exact`]: the tree reader refuses the others, naming where they are), and
/// the position after it. A natural number of up to 15 digits (below 10^15, so exact) without
/// a leading zero, a fraction or an exponent, the common case, is read here; the others by
/// [`number_at_slowly`]. True with those read here, which are as JCS writes them.
#[inline(always)]
fn number_at(text: &str, at: usize) -> Option<(Number, usize, bool)> {
    let bytes = text.as_bytes();
    let (mut n, mut i) = (0u64, at);
    while let Some(&d @ b'0'..=b'9') = bytes.get(i) {
        if i - at == 15 {
            return number_at_slowly(text, at);
        }
        n = n * 10 + u64::from(d - b'0');
        i += 1;
    }
    let leading_zero = bytes.get(at) == Some(&b'0') && i - at > 1;
    let more = matches!(bytes.get(i), Some(b'.' | b'e' | b'E' | b'+' | b'-'));
    if i == at || leading_zero || more {
        return number_at_slowly(text, at);
    }
    Some((Number::from(n), i, true))
}

/// [`number_at`] for any number.
fn number_at_slowly(text: &str, at: usize) -> Option<(Number, usize, bool)> {
    let (n, end, integer) = any_number_at(text, at);
    // An exact integer read as one is written by JCS as it came.
    Some((n.filter(crate::car::is_exact)?, end, integer))
}

/// The number at `at` as `serde_json` reads it (short integers here, the rest by
/// `serde_json`), the position after it, and true for an integer read here (neither `-0`
/// nor with a leading zero).
fn any_number_at(text: &str, start: usize) -> (Option<Number>, usize, bool) {
    let bytes = text.as_bytes();
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
    let int = bytes.get(digits..int_end).unwrap_or_default();
    // Up to 18 digits fit an `i64`; a leading zero, `-0`, fractions and exponents go to
    // `serde_json`.
    if i == int_end
        && (1..=18).contains(&int.len())
        && (int.first() != Some(&b'0') || int.len() == 1)
    {
        let n = int.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if !negative {
            return (Some(Number::from(n)), i, true);
        }
        if n != 0 {
            return (i64::try_from(n).ok().map(|n| Number::from(-n)), i, true);
        }
    }
    let n = text
        .get(start..i)
        .and_then(|t| serde_json::from_str(t).ok());
    (n, i, false)
}

#[inline(always)]
fn str_node(s: &str, plain: bool) -> Node<'_> {
    if plain {
        Node::Str(s)
    } else {
        Node::Escaped(s)
    }
}

/// Reads values into a [`Doc`]. Positions in the text are passed along in registers, not kept
/// in the parser.
struct Parser<'t> {
    text: &'t str,
    decoded: &'t Decoded,
    /// How many strings were decoded so far.
    decoded_count: usize,
    /// How many things JCS writes otherwise were read so far (whitespace, escapes, numbers
    /// other than short natural ones, keys out of order): a value during whose reading it did
    /// not change is its own RFC 8785 text.
    messy: u32,
    max_depth: usize,
    /// The document's vectors, read into.
    doc: Vectors<'t>,
    stacks: Stacks<'t>,
}

impl<'t> Parser<'t> {
    /// The root object, the whole text.
    fn root(&mut self) -> Option<u32> {
        let bytes = self.text.as_bytes();
        let (b'{', at) = self.token(bytes, 0)? else {
            return None;
        };
        let (root, end) = self.object(at, 1)?;
        (skip_ws(bytes, end) == bytes.len()).then_some(root)
    }

    /// The first byte at or after `at` that is not whitespace, and its position.
    #[inline(always)]
    fn token(&mut self, bytes: &[u8], at: usize) -> Option<(u8, usize)> {
        let b = *bytes.get(at)?;
        // Compact text, the common case, has no whitespace: one test.
        if b > b' ' {
            return Some((b, at));
        }
        self.messy += 1;
        token_after_ws(bytes, at)
    }

    /// The string whose opening quote is at `at`, whether it had no escapes, and the position
    /// after its closing quote. `text` is `self.text`, passed in a register: loaded from
    /// `self` after a store, it would be a new pointer whose bytes must be read again.
    #[inline(always)]
    fn string(&mut self, text: &'t str, at: usize) -> Option<(&'t str, bool, usize)> {
        // Sliced at bytes already read as quotes, whose checks (char boundaries) the compiler
        // then drops.
        let rest = text.get(at..)?.strip_prefix('"')?;
        let len = find_special(rest.as_bytes(), 0);
        match rest.as_bytes().get(len)? {
            b'"' => Some((rest.get(..len)?, true, at + len + 2)),
            b'\\' => self.escaped_string(at),
            _ => None,
        }
    }

    /// [`Parser::string`] for a string with escapes, decoded by `serde_json` (surrogate pairs
    /// and all) into the next slot of `decoded`.
    #[cold]
    fn escaped_string(&mut self, at: usize) -> Option<(&'t str, bool, usize)> {
        self.messy += 1;
        let text = self.text;
        let end = escaped_end(text.as_bytes(), at)?;
        let s: String = serde_json::from_str(text.get(at..=end)?).ok()?;
        if s.contains('\0') {
            return None;
        }
        // Each decoded string has a backslash of its own: that many slots are enough.
        let slots = self.decoded.0.get_or_init(|| {
            let most = text.bytes().filter(|&b| b == b'\\').count();
            (0..most).map(|_| OnceCell::new()).collect()
        });
        let slot = slots.get(self.decoded_count)?;
        self.decoded_count += 1;
        slot.set(s).ok()?;
        Some((slot.get()?.as_str(), false, end + 1))
    }

    #[inline(always)]
    fn push(&mut self, node: Node<'t>) -> u32 {
        let i = self.doc.nodes.len() as u32;
        self.doc.nodes.push(node);
        i
    }

    /// The value whose first byte, `first`, is at `at`, in a container at `depth`: its node and
    /// the position after it. Scalars are read here, inlined in the loops of the containers:
    /// only containers cost a call.
    #[inline(always)]
    fn value(&mut self, text: &'t str, first: u8, at: usize, depth: usize) -> Option<(u32, usize)> {
        let (node, after) = match first {
            b'"' => {
                let (s, plain, after) = self.string(text, at)?;
                (str_node(s, plain), after)
            }
            b'{' => return self.object(at, depth + 1),
            b'[' => return self.array(at, depth + 1),
            b'-' | b'0'..=b'9' => {
                let (n, after) = match number_at(text, at) {
                    Some((n, after, true)) => (n, after),
                    Some((n, after, false)) => {
                        self.messy += 1;
                        (n, after)
                    }
                    None => return None,
                };
                (Node::Num(n), after)
            }
            _ => literal_at(text.as_bytes(), at)?,
        };
        Some((self.push(node), after))
    }

    /// The object whose `{` is at `at`, at `depth`: its node, pushed once it is read, and the
    /// position after it.
    fn object(&mut self, at: usize, depth: usize) -> Option<(u32, usize)> {
        if depth > self.max_depth {
            return None;
        }
        let text = self.text;
        let bytes = text.as_bytes();
        // Its members so far: those of `open` from `mark` on.
        let mark = self.stacks.members.len();
        let (mut b, mut at) = self.token(bytes, at + 1)?;
        if b == b'}' {
            at += 1;
        } else {
            loop {
                if b != b'"' {
                    return None;
                }
                let (key, plain, after) = self.string(text, at)?;
                let (colon, at_colon) = self.token(bytes, after)?;
                if colon != b':' {
                    return None;
                }
                let (first, at_value) = self.token(bytes, at_colon + 1)?;
                let messy = self.messy;
                // Most values are strings: read apart from the other kinds, whose results
                // `value` joins (through memory).
                let (value, after) = if first == b'"' {
                    let (s, plain, after) = self.string(text, at_value)?;
                    (self.push(str_node(s, plain)), after)
                } else {
                    self.value(text, first, at_value, depth)?
                };
                self.stacks.members.push(Key {
                    key,
                    value,
                    start: at_value as u32,
                    end: after as u32,
                    plain,
                    canonical: self.messy == messy,
                });
                match self.token(bytes, after)? {
                    (b',', at_comma) => (b, at) = self.token(bytes, at_comma + 1)?,
                    (b'}', at_end) => {
                        at = at_end + 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        let keys = self.stacks.members.get_mut(mark..)?;
        if depth == 1 {
            // The root is only read by field name: its members stay in text order.
            distinct(keys)?;
        } else if !keys_in_order(keys) {
            self.messy += 1;
            sort_keys(keys)?;
        }
        let start = self.doc.members.len() as u32;
        self.doc.members.extend_from_slice(keys);
        self.stacks.members.truncate(mark);
        let end = self.doc.members.len() as u32;
        Some((self.push(Node::Object(start, end)), at))
    }

    /// The array whose `[` is at `at`, at `depth`: its node, pushed once it is read, and the
    /// position after it.
    fn array(&mut self, at: usize, depth: usize) -> Option<(u32, usize)> {
        if depth > self.max_depth {
            return None;
        }
        let text = self.text;
        let bytes = text.as_bytes();
        let mark = self.stacks.items.len();
        let (mut b, mut at) = self.token(bytes, at + 1)?;
        if b == b']' {
            at += 1;
        } else {
            loop {
                let (item, after) = self.value(text, b, at, depth)?;
                self.stacks.items.push(item);
                match self.token(bytes, after)? {
                    (b',', at_comma) => (b, at) = self.token(bytes, at_comma + 1)?,
                    (b']', at_end) => {
                        at = at_end + 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        let start = self.doc.items.len() as u32;
        self.doc.items.extend(self.stacks.items.drain(mark..));
        let end = self.doc.items.len() as u32;
        Some((self.push(Node::Array(start, end)), at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn parsed(text: &str) -> Option<Value> {
        Doc::parse(text, &Decoded::default(), 64)
            .map(|doc| JsonRef(Ref::Doc(&doc, doc.root)).to_value())
    }

    #[test]
    fn reads_what_serde_json_reads() {
        let text = r#" { "b" : [1, -2, 3.5, 1e2, -0, 9007199254740992, -9007199254740992,
            true, false, null, {}], "a": {"x\u00e9": "\ud83d\ude00\n", "": ""}, "\ue000": 0 } "#;
        let v: Value = serde_json::from_str(text).unwrap();
        assert_eq!(parsed(text), Some(v));
    }

    #[test]
    fn sorts_keys_in_the_order_of_utf_16() {
        // Bytes EE 80 80 before F0 90 80 80; UTF-16 E000 after D800 DC00.
        let text = "{\"v\": {\"\u{e000}\": 1, \"\u{10000}\": 2}, \"w\": {\"a\": 1, \"\u{e000}\": 2, \"\u{10000}\": 3}}";
        let decoded = Decoded::default();
        let doc = Doc::parse(text, &decoded, 64).unwrap();
        let v = doc.root_members().iter().find(|m| m.key == "v").unwrap();
        let v = JsonRef::node(&doc, v.value);
        let keys: Vec<_> = match v.shape() {
            Shape::Object(members) => members.map(|m| m.key).collect(),
            _ => panic!("not an object"),
        };
        assert_eq!(keys, ["\u{10000}", "\u{e000}"]);
        assert!(in_order(&doc, doc.root, true));
        let text = "{\"\":{\"\":null,\"\u{10000}\":null}}";
        let decoded = Decoded::default();
        let doc = Doc::parse(text, &decoded, 64).unwrap();
        assert!(in_order(&doc, doc.root, true));
    }

    #[test]
    fn a_value_written_as_jcs_writes_it_is_canonical_with_its_span() {
        let canonical = |v: &str| {
            let text = format!("{{\"a\": {v} ,\"b\":1}}");
            let decoded = Decoded::default();
            let doc = Doc::parse(&text, &decoded, 64).unwrap();
            let m = doc.root_members()[0];
            assert_eq!(text.get(m.span()), Some(v), "{v}");
            doc.canonical_text(&m).map(|(t, at)| (t.to_owned(), at))
        };
        for v in [
            "{}",
            "[]",
            "{\"a\":[1,\"x\",true,false,null,{}],\"b\":{\"c\":0},\"\u{e9}\":\"\u{10000}\"}",
            "0",
            "123456789012345",
            "-1",
            "1234567890123456",
            "9007199254740992",
            "-9007199254740992",
            "\"a\u{7f}\"",
        ] {
            assert_eq!(canonical(v), Some((v.to_owned(), 6)), "{v}");
        }
        for v in [
            "{ }",
            "[1, 2]",
            r#"{"b":1,"a":2}"#,
            r#"{"\u0061":1}"#,
            r#""\/""#,
            "-0",
            "1.5",
            "1.0",
            "1e2",
            "{\"\u{e000}\":1,\"\u{10000}\":2}",
        ] {
            assert_eq!(canonical(v), None, "{v}");
        }
    }

    #[test]
    fn a_document_reads_into_the_vectors_of_the_last_one_dropped_on_its_thread() {
        let text = r#"{"agent":"a","args":{"b":[1,2],"a":{"x":"y"}}}"#;
        let decoded = Decoded::default();
        let first = Doc::parse(text, &decoded, 8).unwrap();
        let (nodes, members) = (first.vectors.nodes.as_ptr(), first.vectors.members.as_ptr());
        drop(first);
        let second = Doc::parse(text, &decoded, 8).unwrap();
        assert_eq!(second.vectors.nodes.as_ptr(), nodes);
        assert_eq!(second.vectors.members.as_ptr(), members);
        // What it reads is its own: the vectors were emptied.
        assert_eq!(
            JsonRef::node(&second, second.root).to_value(),
            parsed(text).unwrap()
        );
        drop(second);

        // One that grew large is freed, not kept.
        let large = format!(r#"{{"args":[{}0]}}"#, "0,".repeat(4 * MOST_KEPT));
        drop(Doc::parse(&large, &decoded, 8).unwrap());
        let after = Doc::parse(text, &decoded, 8).unwrap();
        assert!(after.vectors.nodes.capacity() <= MOST_KEPT);
        assert!(after.vectors.items.capacity() <= MOST_KEPT);
    }

    /// The capacities of the vectors kept on this thread: nodes, members, open members.
    fn spare_capacities() -> [usize; 3] {
        let vectors = SPARE_VECTORS.take();
        let stacks = SPARE_STACKS.take();
        let capacities = [
            vectors.nodes.capacity(),
            vectors.members.capacity(),
            stacks.members.capacity(),
        ];
        SPARE_VECTORS.set(vectors);
        SPARE_STACKS.set(stacks);
        capacities
    }

    #[test]
    fn a_document_that_is_given_up_on_hands_its_vectors_back() {
        let decoded = Decoded::default();
        let bad = r#"{"agent":"a","args":{"k":"v","l":"w","m":"x"},}"#;
        SPARE_VECTORS.take();
        SPARE_STACKS.take();
        assert!(Doc::parse(bad, &decoded, 8).is_none());
        assert!(spare_capacities().iter().all(|&c| c >= bad.len() / 16));
    }

    #[test]
    fn nothing_in_a_document_needs_dropping() {
        assert!(!std::mem::needs_drop::<Node<'_>>());
        assert!(!std::mem::needs_drop::<Key<'_>>());
    }

    #[test]
    fn decodes_strings_with_escapes() {
        let text = r#"{"a\"b": ["\u00e9\n", "c", "\\", {"\t": "\ud83d\ude00"}]}"#;
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
            r#"{"a":fals}"#,
            r#"{"a":falsy}"#,
            r#"{"a":nul}"#,
            r#"{"a":nulll}"#,
            r#"{"a":null"#,
            r#"{"a":[true"#,
            r#"{} x"#,
            r#"{"a":{"b":{"c":{}}}}"#,
        ] {
            let deep = text.starts_with(r#"{"a":{"b""#);
            let doc = Doc::parse(text, &Decoded::default(), if deep { 3 } else { 64 }).is_some();
            assert!(!doc, "{text}");
        }
    }

    #[test]
    fn members_around_nested_objects_stay_with_their_objects() {
        let text =
            r#"{"z":1,"a":{"y":2,"b":{"x":3,"c":{}},"d":[{"w":4,"e":5}],"f":6},"g":{"h":7}}"#;
        let v: Value = serde_json::from_str(text).unwrap();
        assert_eq!(parsed(text), Some(v));
        // A key repeated at any depth, next to nested objects or not.
        for text in [
            r#"{"a":{"b":{}},"a":1}"#,
            r#"{"z":{"y":{"x":1},"y":2}}"#,
            r#"{"z":{"y":{"x":1,"w":{},"x":2},"v":3}}"#,
            r#"{"z":[{"a":1,"b":{"c":2},"a":3}]}"#,
            r#"{"z":{"a":1,"\u0061":2}}"#,
            r#"{"z":{"\u0061":1,"a":2}}"#,
        ] {
            assert!(parsed(text).is_none(), "{text}");
        }
        // Escaped keys, in order or not.
        for text in [r#"{"z":{"\u0061":1,"b":2}}"#, r#"{"z":{"\u0062":1,"a":2}}"#] {
            let v: Value = serde_json::from_str(text).unwrap();
            assert_eq!(parsed(text), Some(v), "{text}");
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
        let text = "[a-c!#\u{0}-\u{1f}\"\\\\/\u{7f}\u{e9}\u{e000}\u{ffff}\u{10000}]{0,6}";
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

    /// A JSON text's structure as written: members in any order, keys maybe repeated.
    #[derive(Debug, Clone)]
    enum Text {
        Leaf(Value),
        Array(Vec<Text>),
        Object(Vec<(String, Text)>),
    }

    fn render(t: &Text, spaced: bool, out: &mut String) {
        let gap = if spaced { " \n\t" } else { "" };
        match t {
            Text::Leaf(v) => out.push_str(&serde_json::to_string(v).unwrap()),
            Text::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    out.push_str(if i > 0 { "," } else { "" });
                    out.push_str(gap);
                    render(item, spaced, out);
                }
                out.push_str(gap);
                out.push(']');
            }
            Text::Object(members) => {
                out.push('{');
                for (i, (k, v)) in members.iter().enumerate() {
                    out.push_str(if i > 0 { "," } else { "" });
                    out.push_str(gap);
                    out.push_str(&serde_json::to_string(k).unwrap());
                    out.push_str(gap);
                    out.push(':');
                    out.push_str(gap);
                    render(v, spaced, out);
                }
                out.push_str(gap);
                out.push('}');
            }
        }
    }

    fn repeats_a_key(t: &Text) -> bool {
        match t {
            Text::Leaf(_) => false,
            Text::Array(items) => items.iter().any(repeats_a_key),
            Text::Object(members) => {
                let keys: std::collections::BTreeSet<_> = members.iter().map(|(k, _)| k).collect();
                keys.len() < members.len() || members.iter().any(|(_, v)| repeats_a_key(v))
            }
        }
    }

    /// Every object but the root has its members in RFC 8785 order.
    fn in_order(doc: &Doc<'_>, i: u32, root: bool) -> bool {
        match doc.view(i) {
            View::Array(items) => items.iter().all(|&i| in_order(doc, i, false)),
            View::Object(members) => {
                (root
                    || members
                        .windows(2)
                        .all(|w| utf16_cmp(w[0].name(), w[1].name()).is_lt()))
                    && members.iter().all(|m| in_order(doc, m.value(), false))
            }
            _ => true,
        }
    }

    /// Keys that collide, need escapes, or order differently in UTF-16 and in UTF-8.
    const KEY: &str = "[ab\"\\\\\u{1}\u{7f}\u{e9}\u{e000}\u{ffff}\u{10000}]{0,3}";

    /// Keys whose UTF-16 order is not their bytes' order.
    const HIGH_KEY: &str = "[a\u{e000}\u{ffff}\u{10000}]{1,2}";

    fn text() -> impl Strategy<Value = Text> {
        // Numbers the parser takes (most of `value()`'s are beyond 2^53).
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-(1i64 << 53)..=(1i64 << 53)).prop_map(Value::from),
            (-1e15f64..1e15).prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
            "[a\"\\\\\u{1}\u{e9}\u{10000}]{0,4}".prop_map(Value::String),
        ];
        leaf.prop_map(Text::Leaf).prop_recursive(3, 24, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Text::Array),
                object(prop_oneof![KEY, HIGH_KEY], inner, 6),
            ]
        })
    }

    /// Objects whose keys are seldom repeated (one in sixteen may be).
    fn object(
        key: impl Strategy<Value = String>,
        value: impl Strategy<Value = Text>,
        most: usize,
    ) -> impl Strategy<Value = Text> {
        let members = prop::collection::vec((key, value), 0..most);
        (members, 0..16u8).prop_map(|(mut members, repeat)| {
            if repeat != 0 {
                let mut seen = std::collections::BTreeSet::new();
                members.retain(|(k, _)| seen.insert(k.clone()));
            }
            Text::Object(members)
        })
    }

    /// `t` rendered is read as `serde_json` reads it, or refused for a repeated key, a NUL or
    /// a number the tree reader refuses; objects but the root come in RFC 8785 order.
    fn reads_like_serde_json(t: &Text, spaced: bool) -> Result<(), TestCaseError> {
        let mut text = String::new();
        render(t, spaced, &mut text);
        let v: Value = serde_json::from_str(&text).unwrap();
        let repeats = repeats_a_key(t);
        let decoded = Decoded::default();
        match Doc::parse(&text, &decoded, 64) {
            Some(doc) => {
                prop_assert!(!repeats, "took a repeated key: {}", text);
                prop_assert_eq!(JsonRef(Ref::Doc(&doc, doc.root)).to_value(), v);
                prop_assert!(in_order(&doc, doc.root, true), "out of order: {}", text);
            }
            None => prop_assert!(
                repeats || text.contains("\\u0000") || inexact(&v),
                "refused {}",
                text
            ),
        }
        Ok(())
    }

    /// Objects in objects whose keys share a prefix longer than a word and differ late (or
    /// not at all, or only by how they are escaped).
    fn late_keys() -> impl Strategy<Value = Text> {
        let key = || "[ab\"\u{e9}\u{10000}]{0,3}".prop_map(|s| format!("a_long_shared_prefix_{s}"));
        let leaf = prop_oneof![Just(Text::Leaf(Value::Null)), text()];
        let inner = object(key(), leaf, 6).boxed();
        object(
            key(),
            prop_oneof![inner.clone(), object(key(), inner, 4)],
            6,
        )
    }

    /// A request-like root: fields in any order, up to more than [`distinct`] compares.
    fn root() -> impl Strategy<Value = Text> {
        prop_oneof![object("[a-z_]{1,12}", text(), 40), object(KEY, text(), 8),]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2_000))]

        #[test]
        fn special_finds_the_first_special_byte(s in "[a\"\\\\\u{0}\u{1}\u{2}\u{1f} !#\\[\\]\u{7f}\u{e9}\u{10000}]{0,40}", i in 0usize..8) {
            let i = i.min(s.len());
            prop_assert_eq!(find_special(s.as_bytes(), i), special_slowly(s.as_bytes(), i));
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

    proptest! {
        // Larger documents: fewer cases.
        #![proptest_config(ProptestConfig::with_cases(500))]

        #[test]
        fn a_document_in_any_order_is_the_value_serde_json_reads(t in root(), spaced in any::<bool>()) {
            reads_like_serde_json(&t, spaced)?;
        }

        #[test]
        fn keys_differing_late_are_ordered_and_compared(t in late_keys(), spaced in any::<bool>()) {
            reads_like_serde_json(&t, spaced)?;
        }

        #[test]
        fn utf16_before_is_the_rfc_8785_order(a in KEY, b in KEY) {
            let before = utf16_before(a.as_bytes(), b.as_bytes());
            if before {
                prop_assert!(utf16_cmp(&a, &b).is_lt());
            }
            if !is_high(&a) && !is_high(&b) {
                prop_assert_eq!(before, a < b);
            }
        }
    }
}
