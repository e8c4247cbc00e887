//! Total, fail-closed evaluation of compiled expressions (SPEC §3.6).
//!
//! Values come straight from the request's JSON (borrowed, not copied). A missing field (or
//! JSON `null`) is *unknown*, and logic is three-valued; a value of the wrong type is an error
//! that ends the decision with `EVAL_ERROR`.

use std::borrow::Cow;
use std::cmp::Ordering;

use fpl::ast::{BinOp, BudgetWindow};
use rust_decimal::Decimal;
use serde_json::Value as Json;

use crate::compile::{CExpr, Const, Field, FieldTest, Test};
use crate::doc::{Doc, JsonRef, Shape, Source};

/// Three-valued truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tri {
    True,
    False,
    Unknown,
}

impl Tri {
    pub fn negate(self) -> Tri {
        match self {
            Tri::True => Tri::False,
            Tri::False => Tri::True,
            Tri::Unknown => Tri::Unknown,
        }
    }
}

/// Why evaluation stopped.
#[derive(Debug, Clone, PartialEq)]
pub enum EvalError {
    /// A value of the wrong type: the message names the field and the operator.
    Type(String),
    /// A selector's source could not answer.
    Selector { index: usize, message: String },
}

/// What an expression may read besides the arguments.
pub trait Facts {
    fn args(&self) -> JsonRef<'_>;
    fn principal(&self) -> JsonRef<'_>;
    fn agent_id(&self) -> &str;
    fn tool_id(&self) -> &str;
    fn session_id(&self) -> Option<&str>;
    fn session_calls(&self) -> u64;
    fn session_cost(&self) -> Decimal;
    fn time_hour(&self) -> u8;
    fn time_weekday(&self) -> &str;
    fn time_date(&self) -> String;
    fn count(&self, pattern: &fpl::pattern::ToolPattern, window_ms: u64) -> u64;
    fn spent(&self, window: BudgetWindow) -> Decimal;
    /// The selector's answer for this call (its key evaluated, the source asked or its cache
    /// read): `Ok(None)` when the key is missing or the source has no entry for it.
    fn selector(&self, index: usize) -> Result<Option<Json>, String>;
}

/// A run-time value.
#[derive(Debug, Clone)]
pub enum V<'a> {
    Num(Decimal),
    Str(Cow<'a, str>),
    Bool(bool),
    Dur(u64),
    /// Elements that are missing (JSON `null`) stay as `None`: they make membership unknown.
    List(Vec<Option<V<'a>>>),
    Object,
    /// A JSON number beyond what a `Decimal` holds (about ±7.9e28): only a selector's answer
    /// can be one (the request's numbers stop at ±2^53). It equals and orders with nothing.
    Huge,
}

impl V<'_> {
    fn kind(&self) -> &'static str {
        match self {
            V::Num(_) => "a number",
            V::Str(_) => "a string",
            V::Bool(_) => "a boolean",
            V::Dur(_) => "a duration",
            V::List(_) => "a list",
            V::Object => "an object",
            V::Huge => "a number too large to compare (beyond ±7.9e28)",
        }
    }

    fn into_owned(self) -> V<'static> {
        match self {
            V::Num(n) => V::Num(n),
            V::Str(s) => V::Str(Cow::Owned(s.into_owned())),
            V::Bool(b) => V::Bool(b),
            V::Dur(d) => V::Dur(d),
            V::List(items) => V::List(items.into_iter().map(|i| i.map(V::into_owned)).collect()),
            V::Object => V::Object,
            V::Huge => V::Huge,
        }
    }
}

type R<'a> = Result<Option<V<'a>>, EvalError>;

/// A JSON number as an exact decimal. Integers convert exactly; other numbers through their
/// shortest decimal form (JSON numbers are IEEE doubles, as RFC 8785 says).
pub fn number(n: &serde_json::Number) -> Option<Decimal> {
    if let Some(i) = n.as_i64() {
        return Some(Decimal::from(i));
    }
    if let Some(u) = n.as_u64() {
        return Some(Decimal::from(u));
    }
    let f = n.as_f64()?;
    Decimal::from_str_exact(&f.to_string())
        .or_else(|_| Decimal::try_from(f))
        .ok()
}

fn from_json(v: JsonRef<'_>) -> Option<V<'_>> {
    // A tree's values are read directly: building their shapes costs more.
    if let Some(tree) = v.as_tree() {
        return from_tree(tree);
    }
    match v.shape() {
        Shape::Null => None,
        Shape::Bool(b) => Some(V::Bool(b)),
        Shape::Num(n) => Some(number(n).map_or(V::Huge, V::Num)),
        Shape::Str(s, _) => Some(V::Str(Cow::Borrowed(s))),
        Shape::Array(items) => Some(V::List(items.map(from_json).collect())),
        Shape::Object(_) => Some(V::Object),
    }
}

fn from_tree(v: &Json) -> Option<V<'_>> {
    match v {
        Json::Null => None,
        Json::Bool(b) => Some(V::Bool(*b)),
        Json::Number(n) => Some(number(n).map_or(V::Huge, V::Num)),
        Json::String(s) => Some(V::Str(Cow::Borrowed(s))),
        Json::Array(items) => Some(V::List(items.iter().map(from_tree).collect())),
        Json::Object(_) => Some(V::Object),
    }
}

#[inline(always)]
fn lookup<'j>(root: JsonRef<'j>, path: &[String]) -> Option<JsonRef<'j>> {
    match root.source() {
        Source::Tree(tree) => lookup_tree(tree, path).map(JsonRef::tree),
        Source::Doc(doc, node) => lookup_doc(doc, node, path),
    }
}

/// [`lookup`] in a document, whose objects are slices of members.
fn lookup_doc<'j>(doc: &'j Doc<'j>, mut node: u32, path: &[String]) -> Option<JsonRef<'j>> {
    for seg in path {
        node = doc
            .members_of(node)
            .iter()
            .find(|m| same_key(m.name(), seg))?
            .value();
    }
    Some(JsonRef::node(doc, node))
}

fn lookup_tree<'j>(tree: &'j Json, path: &[String]) -> Option<&'j Json> {
    path.iter()
        .try_fold(tree, |v, seg| tree_member(v.as_object()?, seg))
}

/// Member `key` of a tree's object. The objects of requests are small: a scan that compares
/// lengths first compares the bytes of about one key, where the ordered search compares them
/// with every key it passes. The keys are in byte order, so the scan starts from the end whose
/// key's first byte is nearer the key's.
fn tree_member<'j>(object: &'j serde_json::Map<String, Json>, key: &str) -> Option<&'j Json> {
    if object.len() > 16 {
        return object.get(key);
    }
    let mut members = object.iter();
    let (first, value) = members.next()?;
    if same_key(first, key) {
        return Some(value);
    }
    let (last, value) = members.next_back()?;
    if same_key(last, key) {
        return Some(value);
    }
    let byte = |s: &str| i32::from(s.as_bytes().first().copied().unwrap_or(0));
    let from_back = byte(key) - byte(first) > byte(last) - byte(key);
    let same = |(k, _): &(&String, &Json)| same_key(k, key);
    let found = if from_back {
        members.rfind(same)
    } else {
        members.find(same)
    };
    found.map(|(_, v)| v)
}

/// `a == b` for keys and short strings, without a call to `memcmp` for those of up to 16 bytes.
#[inline(always)]
fn same_key(a: &str, b: &str) -> bool {
    crate::compile::same_bytes(a.as_bytes(), b.as_bytes())
}

/// How an operand is named in an error message.
fn name(e: &CExpr) -> String {
    match e {
        CExpr::Arg(p) => p.join("."),
        CExpr::Principal(p) => format!("principal.{}", p.join(".")),
        CExpr::Selector(_, p) => format!("selector field {}", p.join(".")),
        CExpr::Lit(c) => literal(c),
        _ => "the value".into(),
    }
}

/// A literal as FPL spells it (money as its number: `$500` is `500`).
fn literal(c: &Const) -> String {
    match c {
        Const::Num(n) => n.normalize().to_string(),
        Const::Str(s) => format!("{s:?}"),
        Const::Bool(b) => b.to_string(),
        Const::Duration(ms) => format!("{ms}ms"),
        Const::Null => "null".into(),
    }
}

fn type_error<T>(msg: String) -> Result<T, EvalError> {
    Err(EvalError::Type(msg))
}

/// The order of two numbers. Of one scale (two integers, or two amounts with as many decimals)
/// they compare by their mantissas, as `Decimal::cmp` would after rescaling one to the other.
fn cmp_num(x: &Decimal, y: &Decimal) -> Ordering {
    if x.scale() == y.scale() {
        x.mantissa().cmp(&y.mantissa())
    } else {
        x.cmp(y)
    }
}

/// Evaluates `e` as a condition.
pub fn truth<'a>(e: &'a CExpr, f: &'a dyn Facts) -> Result<Tri, EvalError> {
    cond(e, f).map_err(|err| *err)
}

/// [`truth`] with its rare error boxed: each level returns a tag and an answer, not a result
/// the size of the error.
pub(crate) fn cond<'a>(e: &'a CExpr, f: &'a dyn Facts) -> Result<Tri, Box<EvalError>> {
    match e {
        CExpr::And(a, b) => {
            let l = cond(a, f)?;
            if l == Tri::False {
                return Ok(Tri::False);
            }
            Ok(match (l, cond(b, f)?) {
                (_, Tri::False) => Tri::False,
                (Tri::True, Tri::True) => Tri::True,
                _ => Tri::Unknown,
            })
        }
        CExpr::Or(a, b) => {
            let l = cond(a, f)?;
            if l == Tri::True {
                return Ok(Tri::True);
            }
            Ok(match (l, cond(b, f)?) {
                (_, Tri::True) => Tri::True,
                (Tri::False, Tri::False) => Tri::False,
                _ => Tri::Unknown,
            })
        }
        CExpr::Not(inner) => Ok(cond(inner, f)?.negate()),
        CExpr::Test(t) => field_test(t, f),
        other => truth_of_value(other, f).map_err(Box::new),
    }
}

/// [`truth`] of anything but the logic and prepared comparisons: kept apart so that those,
/// the common conditions, run in a small function.
#[inline(never)]
fn truth_of_value<'a>(e: &'a CExpr, f: &'a dyn Facts) -> Result<Tri, EvalError> {
    match e {
        CExpr::Binary(op, a, b) => compare(*op, a, b, f),
        CExpr::Matches(a, re) => match operand(a, f)? {
            None => Ok(Tri::Unknown),
            Some(V::Str(s)) => Ok(tri(re.is_match(&s))),
            Some(other) => type_error(format!(
                "`{}` is {}; `matches` needs a string",
                name(a),
                other.kind()
            )),
        },
        other => match eval(other, f)? {
            None => Ok(Tri::Unknown),
            Some(V::Bool(b)) => Ok(tri(b)),
            Some(v) => type_error(format!(
                "`{}` is {}; a condition needs true or false",
                name(other),
                v.kind()
            )),
        },
    }
}

/// A prepared comparison: answered from the field's JSON when [`quick`] can, else evaluated
/// as it was written.
#[inline]
fn field_test(t: &FieldTest, f: &dyn Facts) -> Result<Tri, Box<EvalError>> {
    let value = match &t.field {
        Field::Arg(path) => lookup(f.args(), path),
        Field::Principal(path) => lookup(f.principal(), path),
    };
    match quick(&t.test, value) {
        Some(answer) => Ok(answer),
        None => cond(&t.general, f),
    }
}

/// The answer of `test` on the field's value (`None`: missing) when the value is missing,
/// `null` or of the literals' type (an integer for a number): the answer the comparison
/// evaluated as usual gives. `None` for any other value.
fn quick(test: &Test, value: Option<JsonRef<'_>>) -> Option<Tri> {
    let Some(value) = value else {
        return Some(Tri::Unknown);
    };
    // Strings, the commonest values, are read without taking the value's whole shape.
    if let Some(s) = value.as_str() {
        return quick_str(test, s).map(tri);
    }
    let answer = match (test, value.shape()) {
        (_, Shape::Null) => return Some(Tri::Unknown),
        (
            Test::Num {
                op,
                floor,
                integral,
            },
            Shape::Num(n),
        ) => {
            let int = match n.as_i64() {
                Some(i) => i128::from(i),
                None => i128::from(n.as_u64()?),
            };
            let ord = match int.cmp(floor) {
                Ordering::Equal if !integral => Ordering::Less,
                ord => ord,
            };
            match op {
                BinOp::Eq => ord.is_eq(),
                BinOp::Ne => ord.is_ne(),
                BinOp::Lt => ord.is_lt(),
                BinOp::Le => ord.is_le(),
                BinOp::Gt => ord.is_gt(),
                BinOp::Ge => ord.is_ge(),
                _ => return None,
            }
        }
        (Test::Bool { equal, value }, Shape::Bool(b)) => (*value == b) == *equal,
        _ => return None,
    };
    Some(tri(answer))
}

/// [`quick`] on a string value.
fn quick_str(test: &Test, s: &str) -> Option<bool> {
    Some(match test {
        Test::Str { equal, value } => same_key(value, s) == *equal,
        Test::InStrs { negate, set } => set.iter().any(|x| same_key(x, s)) != *negate,
        Test::Matches(re) => re.is_match(s),
        Test::Num { .. } | Test::Bool { .. } => return None,
    })
}

fn tri(b: bool) -> Tri {
    if b { Tri::True } else { Tri::False }
}

fn compare<'a>(op: BinOp, a: &'a CExpr, b: &'a CExpr, f: &'a dyn Facts) -> Result<Tri, EvalError> {
    if let (BinOp::In | BinOp::NotIn, CExpr::List(items)) = (op, b)
        && items.iter().all(|i| matches!(i, CExpr::Lit(_)))
    {
        return in_literals(op, a, items, f);
    }
    let l = operand(a, f)?;
    let r = operand(b, f)?;
    let (Some(l), Some(r)) = (l, r) else {
        return Ok(Tri::Unknown);
    };
    let mismatch = |l: &V, r: &V| -> EvalError {
        EvalError::Type(format!(
            "`{}` is {} and `{}` is {}; `{}` needs values of one type",
            name(a),
            l.kind(),
            name(b),
            r.kind(),
            op.symbol()
        ))
    };
    let result = match op {
        BinOp::Eq | BinOp::Ne => {
            let eq = equal(&l, &r).ok_or_else(|| mismatch(&l, &r))?;
            if op == BinOp::Eq { eq } else { !eq }
        }
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => {
            let ord = match (&l, &r) {
                (V::Num(x), V::Num(y)) => cmp_num(x, y),
                (V::Dur(x), V::Dur(y)) => x.cmp(y),
                _ => return Err(mismatch(&l, &r)),
            };
            match op {
                BinOp::Lt => ord.is_lt(),
                BinOp::Le => ord.is_le(),
                BinOp::Gt => ord.is_gt(),
                _ => ord.is_ge(),
            }
        }
        BinOp::In | BinOp::NotIn => {
            let V::List(items) = &r else {
                return type_error(format!(
                    "`{}` is {}; `{}` needs a list",
                    name(b),
                    r.kind(),
                    op.symbol()
                ));
            };
            let found = member(&l, items, |item| mismatch(&l, item))?;
            return Ok(if op == BinOp::In {
                found
            } else {
                found.negate()
            });
        }
        BinOp::Contains => match (&l, &r) {
            (V::Str(s), V::Str(t)) => s.contains(t.as_ref()),
            (V::List(items), _) => return member(&r, items, |item| mismatch(item, &r)),
            _ => return Err(mismatch(&l, &r)),
        },
        BinOp::StartsWith | BinOp::EndsWith => match (&l, &r) {
            (V::Str(s), V::Str(t)) if op == BinOp::StartsWith => s.starts_with(t.as_ref()),
            (V::Str(s), V::Str(t)) => s.ends_with(t.as_ref()),
            _ => return Err(mismatch(&l, &r)),
        },
        BinOp::And | BinOp::Or | BinOp::Matches => {
            return type_error(format!("`{}` cannot appear here", op.symbol()));
        }
    };
    Ok(tri(result))
}

/// `in` / `not in` a list written as literals: the same answer as building the list and
/// comparing, without building it. Literals never fail to evaluate, so comparing as they are
/// evaluated changes nothing.
fn in_literals<'a>(
    op: BinOp,
    a: &'a CExpr,
    items: &'a [CExpr],
    f: &'a dyn Facts,
) -> Result<Tri, EvalError> {
    let Some(l) = operand(a, f)? else {
        return Ok(Tri::Unknown);
    };
    let mut found = Tri::False;
    for element in items {
        // A missing element (`null`) might have been the value: not finding it is unknown.
        let Some(item) = operand(element, f)? else {
            found = Tri::Unknown;
            continue;
        };
        match equal(&l, &item) {
            Some(true) => {
                found = Tri::True;
                break;
            }
            Some(false) => {}
            None => {
                return Err(EvalError::Type(format!(
                    "`{}` is {} and `{}` in the list is {}; `{}` needs values of one type",
                    name(a),
                    l.kind(),
                    name(element),
                    item.kind(),
                    op.symbol()
                )));
            }
        }
    }
    Ok(if op == BinOp::In {
        found
    } else {
        found.negate()
    })
}

/// Is `value` in `items`? True if an element equals it; else unknown if an element is missing
/// (it might have been equal); else false. Elements of another type are a type error.
fn member<'v>(
    value: &V,
    items: &'v [Option<V<'v>>],
    mismatch: impl Fn(&V) -> EvalError,
) -> Result<Tri, EvalError> {
    let mut found = Tri::False;
    for item in items {
        match item {
            None => found = Tri::Unknown,
            Some(item) => {
                if equal(value, item).ok_or_else(|| mismatch(item))? {
                    return Ok(Tri::True);
                }
            }
        }
    }
    Ok(found)
}

/// `==` over values of one type; `None` when the types differ (a type error).
fn equal(l: &V, r: &V) -> Option<bool> {
    match (l, r) {
        (V::Num(x), V::Num(y)) => Some(cmp_num(x, y).is_eq()),
        (V::Str(x), V::Str(y)) => Some(x == y),
        (V::Bool(x), V::Bool(y)) => Some(x == y),
        (V::Dur(x), V::Dur(y)) => Some(x == y),
        _ => None,
    }
}

/// A literal's value (`null` is missing).
fn constant(c: &Const) -> Option<V<'_>> {
    match c {
        Const::Num(n) => Some(V::Num(*n)),
        Const::Str(s) => Some(V::Str(Cow::Borrowed(s))),
        Const::Bool(b) => Some(V::Bool(*b)),
        Const::Duration(d) => Some(V::Dur(*d)),
        Const::Null => None,
    }
}

/// [`eval`] for an operand of a comparison: literals and argument fields, the usual operands,
/// are read here directly; entering `eval`, a large function, costs more than reading them.
#[inline]
fn operand<'a>(e: &'a CExpr, f: &'a dyn Facts) -> R<'a> {
    match e {
        CExpr::Lit(c) => Ok(constant(c)),
        CExpr::Arg(path) => Ok(lookup(f.args(), path).and_then(from_json)),
        _ => eval(e, f),
    }
}

/// Evaluates `e` to a value; `Ok(None)` means missing.
pub fn eval<'a>(e: &'a CExpr, f: &'a dyn Facts) -> R<'a> {
    Ok(match e {
        CExpr::Lit(c) => constant(c),
        CExpr::Arg(path) => lookup(f.args(), path).and_then(from_json),
        CExpr::Principal(path) => lookup(f.principal(), path).and_then(from_json),
        CExpr::AgentId => Some(V::Str(Cow::Borrowed(f.agent_id()))),
        CExpr::ToolId => Some(V::Str(Cow::Borrowed(f.tool_id()))),
        CExpr::SessionId => f.session_id().map(|s| V::Str(Cow::Borrowed(s))),
        CExpr::SessionCalls => Some(V::Num(Decimal::from(f.session_calls()))),
        CExpr::SessionCost => Some(V::Num(f.session_cost())),
        CExpr::TimeHour => Some(V::Num(Decimal::from(f.time_hour()))),
        CExpr::TimeWeekday => Some(V::Str(Cow::Borrowed(f.time_weekday()))),
        CExpr::TimeDate => Some(V::Str(Cow::Owned(f.time_date()))),
        CExpr::Selector(index, path) => selector(*index, path, f)?,
        CExpr::List(items) => {
            let mut out = Vec::with_capacity(items.len());
            for i in items {
                out.push(eval(i, f)?);
            }
            Some(V::List(out))
        }
        CExpr::Not(_)
        | CExpr::And(..)
        | CExpr::Or(..)
        | CExpr::Binary(..)
        | CExpr::Matches(..)
        | CExpr::Test(_) => match truth(e, f)? {
            Tri::True => Some(V::Bool(true)),
            Tri::False => Some(V::Bool(false)),
            Tri::Unknown => None,
        },
        CExpr::Len(a) => match eval(a, f)? {
            None => None,
            Some(V::Str(s)) => Some(V::Num(Decimal::from(s.chars().count()))),
            Some(V::List(items)) => Some(V::Num(Decimal::from(items.len()))),
            Some(v) => {
                return type_error(format!(
                    "`{}` is {}; `len` needs a string or a list",
                    name(a),
                    v.kind()
                ));
            }
        },
        CExpr::Lower(a) | CExpr::Upper(a) | CExpr::Domain(a) | CExpr::Host(a) => {
            match eval(a, f)? {
                None => None,
                Some(V::Str(s)) => string_fn(e, &s),
                Some(v) => {
                    return type_error(format!(
                        "`{}` is {}; the function needs a string",
                        name(a),
                        v.kind()
                    ));
                }
            }
        }
        CExpr::Count(pattern, window) => Some(V::Num(Decimal::from(f.count(pattern, *window)))),
        CExpr::Spent(window) => Some(V::Num(f.spent(*window))),
    })
}

fn string_fn(e: &CExpr, s: &str) -> Option<V<'static>> {
    let out = match e {
        CExpr::Lower(_) => s.to_lowercase(),
        CExpr::Upper(_) => s.to_uppercase(),
        CExpr::Domain(_) => match s.rsplit_once('@') {
            Some((_, domain)) if !s.contains("://") => domain.to_ascii_lowercase(),
            _ => crate::egress::url_host(s)?,
        },
        _ => crate::egress::url_host(s)?,
    };
    Some(V::Str(Cow::Owned(out)))
}

fn selector<'a>(index: usize, path: &[String], f: &'a dyn Facts) -> R<'a> {
    let answer = f
        .selector(index)
        .map_err(|message| EvalError::Selector { index, message })?;
    Ok(answer
        .as_ref()
        .and_then(|v| lookup(JsonRef::tree(v), path))
        .and_then(from_json)
        .map(V::into_owned))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5_000))]
        /// The same-scale shortcut orders numbers as `Decimal` does, zeros of either sign too.
        #[test]
        fn cmp_num_is_decimal_order(
            a in any::<i64>(), b in any::<i64>(),
            sa in 0u32..4, sb in 0u32..4,
            small in any::<bool>(),
        ) {
            let (a, b) = if small { (a % 1_000, b % 1_000) } else { (a, b) };
            let x = Decimal::new(a, sa);
            let y = Decimal::new(b, sb);
            prop_assert_eq!(cmp_num(&x, &y), x.cmp(&y));
            prop_assert_eq!(cmp_num(&y, &x), y.cmp(&x));
            prop_assert_eq!(cmp_num(&x, &-x), x.cmp(&-x));
            prop_assert_eq!(cmp_num(&x, &x), std::cmp::Ordering::Equal);
        }
    }

    /// Facts of a call that has only arguments and a principal.
    struct Fields<'a> {
        args: JsonRef<'a>,
        principal: JsonRef<'a>,
    }

    impl Facts for Fields<'_> {
        fn args(&self) -> JsonRef<'_> {
            self.args
        }
        fn principal(&self) -> JsonRef<'_> {
            self.principal
        }
        fn agent_id(&self) -> &str {
            "a"
        }
        fn tool_id(&self) -> &str {
            "t"
        }
        fn session_id(&self) -> Option<&str> {
            None
        }
        fn session_calls(&self) -> u64 {
            0
        }
        fn session_cost(&self) -> Decimal {
            Decimal::ZERO
        }
        fn time_hour(&self) -> u8 {
            0
        }
        fn time_weekday(&self) -> &str {
            "monday"
        }
        fn time_date(&self) -> String {
            String::new()
        }
        fn count(&self, _: &fpl::pattern::ToolPattern, _: u64) -> u64 {
            0
        }
        fn spent(&self, _: BudgetWindow) -> Decimal {
            Decimal::ZERO
        }
        fn selector(&self, _: usize) -> Result<Option<Json>, String> {
            Ok(None)
        }
    }

    /// Field values of every JSON type, near the literals of [`literal`] and at the edges.
    fn field_value() -> impl Strategy<Value = Json> {
        let leaf = prop_oneof![
            1 => Just(Json::Null),
            1 => any::<bool>().prop_map(Json::from),
            3 => (-8i64..8).prop_map(Json::from),
            1 => prop::sample::select(vec![i64::MIN, i64::MAX, -1, 0, 1]).prop_map(Json::from),
            1 => prop::sample::select(vec![u64::MAX, 1 << 63]).prop_map(Json::from),
            1 => (-80i64..80).prop_map(|i| Json::from(i as f64 / 10.0)),
            1 => prop::sample::select(vec![1e300, -1e300, 0.5, -0.0]).prop_map(Json::from),
            1 => "[ab]{0,2}|usd|eur|ord_1|test_5_1|qa_5_".prop_map(Json::from),
        ];
        let nested = leaf.clone().prop_recursive(2, 6, 3, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Json::from),
                prop::collection::btree_map("[xy]", inner, 0..3)
                    .prop_map(|m| Json::Object(m.into_iter().collect())),
            ]
        });
        prop_oneof![6 => leaf, 1 => nested]
    }

    fn literal() -> impl Strategy<Value = Const> {
        prop_oneof![
            3 => (-80i64..80, 0u32..3).prop_map(|(m, s)| Const::Num(Decimal::new(m, s))),
            1 => (any::<i64>(), 0u32..29).prop_map(|(m, s)| Const::Num(Decimal::new(m, s))),
            1 => prop::sample::select(vec![Decimal::MAX, Decimal::MIN, -Decimal::ZERO])
                .prop_map(Const::Num),
            1 => "[ab]{0,2}|usd".prop_map(Const::Str),
            1 => any::<bool>().prop_map(Const::Bool),
            1 => Just(Const::Null),
            1 => (0u64..5).prop_map(Const::Duration),
        ]
    }

    /// A comparison of field `x` (of the arguments or the principal) as `compile` writes it.
    #[derive(Debug, Clone)]
    enum Shape {
        Compare(BinOp, Const, bool),
        In(BinOp, Vec<Const>),
        Matches(&'static str),
    }

    fn comparison() -> impl Strategy<Value = Shape> {
        let op = prop::sample::select(vec![
            BinOp::Eq,
            BinOp::Ne,
            BinOp::Lt,
            BinOp::Le,
            BinOp::Gt,
            BinOp::Ge,
            BinOp::Contains,
            BinOp::StartsWith,
        ]);
        prop_oneof![
            (op, literal(), any::<bool>()).prop_map(|(op, c, left)| Shape::Compare(op, c, left)),
            (
                prop::sample::select(vec![BinOp::In, BinOp::NotIn]),
                prop::collection::vec(
                    prop_oneof![
                        4 => "[ab]{0,2}|usd|eur".prop_map(Const::Str),
                        1 => literal(),
                    ],
                    0..4
                )
            )
                .prop_map(|(op, items)| Shape::In(op, items)),
            prop::sample::select(vec!["^(test|qa)_5_[0-9]+$", "b", "^$", "(?i)^U"])
                .prop_map(Shape::Matches),
        ]
    }

    fn build(shape: &Shape, principal: bool) -> CExpr {
        let field = || {
            let path = vec!["x".to_string()];
            Box::new(if principal {
                CExpr::Principal(path)
            } else {
                CExpr::Arg(path)
            })
        };
        let lit = |c: &Const| Box::new(CExpr::Lit(c.clone()));
        match shape {
            Shape::Compare(op, c, false) => CExpr::Binary(*op, field(), lit(c)),
            Shape::Compare(op, c, true) => CExpr::Binary(*op, lit(c), field()),
            Shape::In(op, items) => CExpr::Binary(
                *op,
                field(),
                Box::new(CExpr::List(
                    items.iter().map(|c| CExpr::Lit(c.clone())).collect(),
                )),
            ),
            Shape::Matches(re) => {
                CExpr::Matches(field(), Box::new(crate::compile::Regexp::new(re).unwrap()))
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(10_000))]
        /// A prepared comparison answers as the comparison evaluated as written, errors and
        /// their messages included, on trees and on parsed documents.
        #[test]
        fn field_tests_answer_as_written(
            shape in comparison(),
            value in prop::option::of(field_value()),
            principal in any::<bool>(),
        ) {
            let general = build(&shape, principal);
            let prepared = FieldTest::prepare(build(&shape, principal));
            let mut object = serde_json::Map::new();
            if let Some(v) = value {
                object.insert("x".into(), v);
            }
            let root = Json::Object(object);
            let tree = Fields {
                args: if principal { JsonRef::null() } else { JsonRef::tree(&root) },
                principal: if principal { JsonRef::tree(&root) } else { JsonRef::null() },
            };
            let expected = truth(&general, &tree);
            prop_assert_eq!(&truth(&prepared, &tree), &expected, "{:?} on {}", shape, root);
            let text = serde_json::json!({ "f": root }).to_string();
            // A text the document reader gives up on is read as a tree, tested above.
            let decoded = crate::doc::Decoded::default();
            let Some(doc) = crate::doc::Doc::parse(&text, &decoded, 64) else {
                return Ok(());
            };
            let (_, field) = doc.fields().next().unwrap();
            let parsed = Fields {
                args: if principal { JsonRef::null() } else { field },
                principal: if principal { field } else { JsonRef::null() },
            };
            prop_assert_eq!(&truth(&prepared, &parsed), &expected, "{:?} on {}", shape, text);
        }
    }

    /// Keys near each other: equal, one byte changed (first, last or inside), cut or grown.
    fn key_pair() -> impl Strategy<Value = (String, String)> {
        let key = "[a-z_]{0,20}|[a-zé€😀]{0,6}";
        (key, 0usize..5, any::<prop::sample::Index>(), "[a-zé]").prop_map(|(a, how, at, c)| {
            let mut chars: Vec<char> = a.chars().collect();
            let c = c.chars().next().unwrap_or('a');
            match how {
                0 => {}
                1 if !chars.is_empty() => {
                    let i = at.index(chars.len());
                    chars[i] = c;
                }
                2 => chars.push(c),
                3 => {
                    chars.pop();
                }
                _ => chars.insert(0, c),
            }
            (a, chars.into_iter().collect())
        })
    }

    /// Objects of up to 20 members (some beyond the scan's 16) with keys that share prefixes,
    /// and keys to look for: members' keys and near misses.
    fn object_and_keys() -> impl Strategy<Value = (serde_json::Map<String, Json>, Vec<String>)> {
        let keys = prop::collection::btree_set("[a-z]{0,3}|[A-Z_][a-z]{0,9}|é{0,2}", 0..20);
        (keys, prop::collection::vec("[a-zA-Z_]{0,10}", 0..4)).prop_map(|(keys, misses)| {
            let object: serde_json::Map<String, Json> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| (k.clone(), Json::from(i)))
                .collect();
            let mut wanted: Vec<String> = keys.into_iter().collect();
            wanted.extend(misses);
            wanted.push(String::new());
            (object, wanted)
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5_000))]
        /// The word-wise comparison is `==`.
        #[test]
        fn same_key_is_equality((a, b) in key_pair()) {
            prop_assert_eq!(same_key(&a, &b), a == b, "{:?} {:?}", a, b);
            prop_assert_eq!(same_key(&b, &a), a == b, "{:?} {:?}", b, a);
            prop_assert!(same_key(&a, &a.clone()));
        }

        /// The scan from either end finds what `get` finds, in trees and in documents, at any
        /// depth.
        #[test]
        fn lookups_are_those_of_get((object, keys) in object_and_keys()) {
            for key in &keys {
                prop_assert_eq!(tree_member(&object, key), object.get(key.as_str()), "{}", key);
            }
            let nested = serde_json::json!({ "f": object, "g": { "h": object } });
            let text = serde_json::json!({ "r": nested }).to_string();
            let decoded = crate::doc::Decoded::default();
            let doc = crate::doc::Doc::parse(&text, &decoded, 64).unwrap();
            let (_, root) = doc.fields().next().unwrap();
            let paths = keys.iter().flat_map(|k| {
                [vec!["f".to_string(), k.clone()], vec!["g".into(), "h".into(), k.clone()]]
            });
            for path in paths.chain([vec![], vec!["f".into()], vec!["x".into()]]) {
                let expected = path.iter().try_fold(&nested, |v, seg| v.get(seg.as_str()));
                let in_tree = lookup(JsonRef::tree(&nested), &path).map(JsonRef::to_value);
                prop_assert_eq!(in_tree.as_ref(), expected, "{:?}", path);
                let in_doc = lookup(root, &path).map(JsonRef::to_value);
                prop_assert_eq!(in_doc.as_ref(), expected, "{:?}", path);
            }
        }
    }

    /// The scan of small objects and the search of large ones find what `get` finds.
    #[test]
    fn tree_members_are_those_of_get() {
        for size in [0, 1, 5, 16, 17, 40] {
            let object: serde_json::Map<String, Json> = (0..size)
                .map(|i| {
                    (
                        format!("k{}", "x".repeat(i % 7) + &i.to_string()),
                        Json::from(i),
                    )
                })
                .collect();
            let keys: Vec<String> = object
                .keys()
                .cloned()
                .chain(["", "k", "kx"].map(String::from))
                .collect();
            for key in &keys {
                assert_eq!(tree_member(&object, key), object.get(key.as_str()), "{key}");
            }
        }
    }

    #[test]
    fn cmp_num_edges() {
        let max = Decimal::MAX;
        let min = Decimal::MIN;
        assert_eq!(cmp_num(&max, &min), max.cmp(&min));
        assert_eq!(cmp_num(&min, &max), min.cmp(&max));
        let neg_zero = -Decimal::ZERO;
        assert_eq!(cmp_num(&neg_zero, &Decimal::ZERO), Ordering::Equal);
        let z2 = Decimal::new(0, 2);
        assert_eq!(cmp_num(&z2, &neg_zero), Ordering::Equal);
    }
}
