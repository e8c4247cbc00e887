//! The YAML/JSON shape of the AST, where `derive` alone would not give a readable one.
//!
//! - Conditions and cost amounts are FPL expression strings: `"if": "amount < $500"`.
//! - Money, durations and sizes are strings in FPL notation: `"$500"`, `"30s"`, `"10mb"`. A string
//!   that merely looks like one of them is written `{"string": "30s"}`, so nothing is lost.
//! - `env("NAME")` is `{"env": "NAME"}`; an expression value is `{"expr": "lower(email)"}`.
//! - Named blocks (providers, credentials, …) are maps from name to settings.

use std::fmt;

use rust_decimal::Decimal;
use serde::de::{self, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::*;
use crate::format::{format_expr, literal};

// ---- Spanned ----

impl<T: Serialize> Serialize for Spanned<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value.serialize(s)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Spanned<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(|value| Spanned::new(value, Span::default()))
    }
}

impl Serialize for BudgetWindow {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.word())
    }
}

impl<'de> Deserialize<'de> for BudgetWindow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let word = String::deserialize(d)?;
        BudgetWindow::from_word(&word).ok_or_else(|| {
            de::Error::custom(format!(
                "unknown budget window `{word}`; expected hourly, daily, monthly or session"
            ))
        })
    }
}

// ---- expressions ----

fn parse_expr_text<E: de::Error>(text: &str) -> Result<Expr, E> {
    crate::parser::parse_expr(text).map_err(|diags| {
        let msgs: Vec<String> = diags
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.message.clone())
            .collect();
        let shown: String = if text.chars().count() > 80 {
            text.chars().take(77).chain("...".chars()).collect()
        } else {
            text.to_string()
        };
        E::custom(format!("in expression `{shown}`: {}", msgs.join("; ")))
    })
}

pub mod expr {
    use super::*;

    pub fn serialize<S: Serializer>(e: &Expr, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_expr(e))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Expr, D::Error> {
        let text = ExprText::deserialize(d)?;
        parse_expr_text(&text.0)
    }
}

/// An expression written as a string, or (in YAML/JSON) as a bare number or boolean.
struct ExprText(String);

impl<'de> Deserialize<'de> for ExprText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ExprText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an FPL expression as a string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ExprText, E> {
                Ok(ExprText(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<ExprText, E> {
                Ok(ExprText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ExprText, E> {
                Ok(ExprText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ExprText, E> {
                Ok(ExprText(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ExprText, E> {
                Ok(ExprText(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

pub mod opt_expr {
    use super::*;

    pub fn serialize<S: Serializer>(e: &Option<Expr>, s: S) -> Result<S::Ok, S::Error> {
        match e {
            Some(e) => s.serialize_str(&format_expr(e)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Expr>, D::Error> {
        let text = Option::<ExprText>::deserialize(d)?;
        text.map(|t| parse_expr_text(&t.0)).transpose()
    }
}

// ---- values ----

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Lit(Literal::Str(v)) if sniff(v).is_some() => single(s, "string", v),
            Value::Lit(Literal::Str(v)) => s.serialize_str(v),
            Value::Lit(Literal::Bool(b)) => s.serialize_bool(*b),
            Value::Lit(Literal::Null) => s.serialize_unit(),
            Value::Lit(Literal::Number(n)) => serialize_number(n, s),
            Value::Lit(other) => s.serialize_str(&literal(other)),
            Value::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    seq.serialize_element(&i.value)?;
                }
                seq.end()
            }
            Value::Env(name) => single(s, "env", name),
            Value::Expr(e) => single(s, "expr", &format_expr(e)),
        }
    }
}

fn single<S: Serializer>(s: S, key: &str, value: &str) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(1))?;
    m.serialize_entry(key, value)?;
    m.end()
}

fn serialize_number<S: Serializer>(n: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    if n.is_integer()
        && let Ok(i) = i64::try_from(*n)
    {
        return s.serialize_i64(i);
    }
    // Up to 15 significant digits every float reader gets back exactly what was written (with
    // more, serde_json's default parser may round the last digit).
    let short = n.normalize().mantissa().unsigned_abs() < 10u128.pow(15);
    match n.to_string().parse::<f64>() {
        Ok(f) if short && f.to_string().parse::<Decimal>().ok() == Some(*n) => s.serialize_f64(f),
        // Too precise for a float: keep the exact digits.
        _ => single(s, "number", &n.to_string()),
    }
}

/// A string in FPL literal notation (`$500`, `30s`, `10mb`) read back as that literal.
fn sniff(text: &str) -> Option<Literal> {
    let lexed = crate::lexer::lex(text);
    match lexed.tokens.as_slice() {
        [tok, eof]
            if lexed.diagnostics.is_empty()
                && eof.tok == crate::lexer::Tok::Eof
                && tok.span.start == 0
                && tok.span.end == text.len() =>
        {
            match &tok.tok {
                crate::lexer::Tok::Lit(
                    l @ (Literal::Money(_) | Literal::Duration(_) | Literal::Size(_)),
                ) => Some(l.clone()),
                _ => None,
            }
        }
        _ => None,
    }
}

fn decimal_from_f64<E: de::Error>(v: f64) -> Result<Decimal, E> {
    v.to_string()
        .parse::<Decimal>()
        .map_err(|_| E::custom(format!("number {v} is out of range")))
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Value;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string, number, boolean, null, list, or {\"env\": NAME}")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
                Ok(Value::Lit(Literal::Bool(v)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
                Ok(Value::Lit(Literal::Number(Decimal::from(v))))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
                Ok(Value::Lit(Literal::Number(Decimal::from(v))))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
                decimal_from_f64(v).map(|d| Value::Lit(Literal::Number(d)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
                Ok(Value::Lit(
                    sniff(v).unwrap_or_else(|| Literal::Str(v.to_string())),
                ))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
                Ok(Value::Lit(Literal::Null))
            }
            fn visit_none<E: de::Error>(self) -> Result<Value, E> {
                Ok(Value::Lit(Literal::Null))
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Value, D2::Error> {
                Value::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
                let mut items = Vec::new();
                while let Some(v) = seq.next_element::<Value>()? {
                    items.push(Spanned::new(v, Span::default()));
                }
                Ok(Value::List(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
                let Some(key) = map.next_key::<String>()? else {
                    return Err(de::Error::custom("an empty map is not a value"));
                };
                let text: String = map.next_value()?;
                if map.next_key::<String>()?.is_some() {
                    return Err(de::Error::custom("a tagged value has exactly one key"));
                }
                match key.as_str() {
                    "string" => Ok(Value::Lit(Literal::Str(text))),
                    "env" => Ok(Value::Env(text)),
                    "expr" => parse_expr_text(&text).map(Value::Expr),
                    "number" => text
                        .parse::<Decimal>()
                        .map(|n| Value::Lit(Literal::Number(n)))
                        .map_err(|_| de::Error::custom(format!("`{text}` is not a number"))),
                    other => Err(de::Error::custom(format!(
                        "unknown tagged value `{other}`; expected string, env, expr or number"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

// ---- blocks ----

pub mod entries {
    use super::*;

    pub fn serialize<S: Serializer>(entries: &[Entry], s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(entries.len()))?;
        for e in entries {
            m.serialize_entry(&e.key.value, &e.value.value)?;
        }
        m.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Entry>, D::Error> {
        d.deserialize_map(EntriesVisitor { skip: None })
            .map(|(entries, _)| entries)
    }
}

/// Reads a map into ordered entries, duplicates included (the checker reports them), setting
/// aside the value of the key `skip` (a budget's `window`).
struct EntriesVisitor {
    skip: Option<&'static str>,
}

impl<'de> Visitor<'de> for EntriesVisitor {
    type Value = (Vec<Entry>, Option<String>);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a map of settings")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut entries = Vec::new();
        let mut skipped = None;
        while let Some(key) = map.next_key::<String>()? {
            if Some(key.as_str()) == self.skip {
                skipped = Some(map.next_value::<String>()?);
                continue;
            }
            let value: Value = map.next_value()?;
            entries.push(Entry {
                meta: Meta::default(),
                key: Spanned::new(key, Span::default()),
                value: Spanned::new(value, Span::default()),
            });
        }
        Ok((entries, skipped))
    }
}

pub mod named_blocks {
    use super::*;

    pub fn serialize<S: Serializer>(blocks: &[NamedBlock], s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(blocks.len()))?;
        for b in blocks {
            m.serialize_entry(&b.name.value, &EntriesRef(&b.entries))?;
        }
        m.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<NamedBlock>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<NamedBlock>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map from name to settings")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    let block: Block = map.next_value()?;
                    out.push(NamedBlock {
                        meta: Meta::default(),
                        name: Spanned::new(name, Span::default()),
                        entries: block.entries,
                    });
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

struct EntriesRef<'a>(&'a [Entry]);

impl Serialize for EntriesRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        entries::serialize(self.0, s)
    }
}

pub mod trust_keys {
    use super::*;

    pub fn serialize<S: Serializer>(keys: &[TrustKey], s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(keys.len()))?;
        for k in keys {
            m.serialize_entry(&k.registry.value, &k.key.value)?;
        }
        m.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<TrustKey>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Vec<TrustKey>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map from registry to `ed25519:<base64>` key")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut out = Vec::new();
                while let Some(registry) = map.next_key::<String>()? {
                    let key: String = map.next_value()?;
                    out.push(TrustKey {
                        meta: Meta::default(),
                        registry: Spanned::new(registry, Span::default()),
                        key: Spanned::new(key, Span::default()),
                    });
                }
                Ok(out)
            }
        }
        d.deserialize_map(V)
    }
}

impl Serialize for Budget {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.entries.len() + 1))?;
        m.serialize_entry("window", &self.window.value)?;
        for e in &self.entries {
            m.serialize_entry(&e.key.value, &e.value.value)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for Budget {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (entries, window) = d.deserialize_map(EntriesVisitor {
            skip: Some("window"),
        })?;
        let window = window.ok_or_else(|| de::Error::missing_field("window"))?;
        let window = BudgetWindow::from_word(&window).ok_or_else(|| {
            de::Error::custom(format!(
                "unknown budget window `{window}`; expected hourly, daily, monthly or session"
            ))
        })?;
        Ok(Budget {
            meta: Meta::default(),
            window: Spanned::new(window, Span::default()),
            entries,
        })
    }
}
