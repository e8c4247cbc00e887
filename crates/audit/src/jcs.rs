//! Writing the RFC 8785 (JCS) text of a record whose shape is known: members are written in
//! sorted key order by the caller, so nothing is buffered or sorted per record.

/// Appends `s` as a JCS string: `"` and `\` escaped, control characters as the short escapes
/// of RFC 8785 §3.2.2.2 or `\u00xx`, everything else as is.
pub(crate) fn push_str(out: &mut String, s: &str) {
    out.push('"');
    let b = s.as_bytes();
    let mut clean = 0;
    while let Some(i) = crate::swar::needs_escape(b, clean) {
        out.push_str(&s[clean..i]);
        match b[i] {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            c => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(c >> 4)]));
                out.push(char::from(HEX[usize::from(c & 0xf)]));
            }
        }
        clean = i + 1;
    }
    out.push_str(&s[clean..]);
    out.push('"');
}

/// Writes one JSON object whose keys the caller gives in ascending order (the order RFC 8785
/// sorts ASCII keys in).
pub(crate) struct Object<'o> {
    out: &'o mut String,
    first: bool,
    #[cfg(debug_assertions)]
    last: &'static str,
}

impl<'o> Object<'o> {
    pub(crate) fn open(out: &'o mut String) -> Self {
        out.push('{');
        Object {
            out,
            first: true,
            #[cfg(debug_assertions)]
            last: "",
        }
    }

    fn key(&mut self, key: &'static str) {
        #[cfg(debug_assertions)]
        {
            debug_assert!(
                self.first || self.last < key,
                "JCS keys out of order: {key}"
            );
            self.last = key;
        }
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push('"');
        self.out.push_str(key);
        self.out.push_str("\":");
    }

    pub(crate) fn str(&mut self, key: &'static str, value: &str) -> &mut Self {
        self.key(key);
        push_str(self.out, value);
        self
    }

    pub(crate) fn opt_str(&mut self, key: &'static str, value: Option<&str>) -> &mut Self {
        if let Some(v) = value {
            self.str(key, v);
        }
        self
    }

    pub(crate) fn u64(&mut self, key: &'static str, value: u64) -> &mut Self {
        self.key(key);
        let mut buf = itoa_buf();
        self.out.push_str(decimal(value, &mut buf));
        self
    }

    /// A hash as 64 hex digits (never escaped).
    pub(crate) fn hash(&mut self, key: &'static str, h: &crate::record::Hash) -> &mut Self {
        self.key(key);
        self.out.push('"');
        crate::record::push_hex(self.out, &h.0);
        self.out.push('"');
        self
    }

    /// A time in the one form of [`crate::time::format_ms`].
    pub(crate) fn time(&mut self, key: &'static str, ms: i64) -> &mut Self {
        self.key(key);
        self.out.push('"');
        crate::time::push_ms(self.out, ms);
        self.out.push('"');
        self
    }

    pub(crate) fn bool(&mut self, key: &'static str, value: bool) -> &mut Self {
        self.key(key);
        self.out.push_str(if value { "true" } else { "false" });
        self
    }

    /// A member whose value is already JCS text.
    pub(crate) fn raw(&mut self, key: &'static str, jcs: &str) -> &mut Self {
        self.key(key);
        self.out.push_str(jcs);
        self
    }

    /// A member whose value is an object written by `f`.
    pub(crate) fn object(
        &mut self,
        key: &'static str,
        f: impl FnOnce(&mut Object<'_>),
    ) -> &mut Self {
        self.key(key);
        let mut inner = Object::open(self.out);
        f(&mut inner);
        inner.close();
        self
    }

    pub(crate) fn close(self) {
        self.out.push('}');
    }
}

fn itoa_buf() -> [u8; 20] {
    [0; 20]
}

/// The decimal digits of `n` (JCS writes integers below 2^53 exactly so; sequence numbers,
/// latencies and TTLs stay far below).
pub(crate) fn decimal(mut n: u64, buf: &mut [u8; 20]) -> &str {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // Only ASCII digits were written.
    std::str::from_utf8(&buf[i..]).unwrap_or("0")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_match_serde_json_canonicalizer() {
        for s in [
            "",
            "plain",
            "quote\" back\\ slash",
            "\u{0}\u{1f}\u{7f}",
            "tab\tnl\ncr\r\u{8}\u{c}",
            "é 😀 \u{2028}",
        ] {
            let mut out = String::new();
            push_str(&mut out, s);
            let want = serde_json_canonicalizer::to_string(&serde_json::Value::from(s)).unwrap();
            assert_eq!(out, want, "{s:?}");
        }
    }

    #[test]
    fn decimals() {
        let mut b = itoa_buf();
        assert_eq!(decimal(0, &mut b), "0");
        assert_eq!(decimal(u64::MAX, &mut b), "18446744073709551615");
        assert_eq!(decimal(1024, &mut b), "1024");
    }
}
