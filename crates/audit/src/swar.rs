//! Finding the bytes that end or escape a JSON string eight at a time (SWAR): record bodies are
//! mostly short strings, where a vectorised search's setup costs more than the search.

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// High bit set in each byte of `x` that equals `c` (the lowest flagged byte is exact; higher
/// ones may be false positives after a true one, which callers never look at).
#[inline]
fn eq(x: u64, c: u8) -> u64 {
    let y = x ^ (LO * u64::from(c));
    y.wrapping_sub(LO) & !y & HI
}

/// High bit set in each byte of `x` below 0x20 (same exactness as [`eq`]).
#[inline]
fn control(x: u64) -> u64 {
    x.wrapping_sub(LO * 0x20) & !x & HI
}

#[inline]
fn scan(
    b: &[u8],
    from: usize,
    hit: impl Fn(u64) -> u64,
    byte: impl Fn(u8) -> bool,
) -> Option<usize> {
    let mut i = from;
    while i + 8 <= b.len() {
        let mut chunk = [0u8; 8];
        chunk.copy_from_slice(&b[i..i + 8]);
        let m = hit(u64::from_le_bytes(chunk));
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b[i..].iter().position(|&c| byte(c)).map(|p| i + p)
}

/// The first `"` or `\` at or after `from`.
pub(crate) fn quote_or_backslash(b: &[u8], from: usize) -> Option<usize> {
    scan(
        b,
        from,
        |x| eq(x, b'"') | eq(x, b'\\'),
        |c| c == b'"' || c == b'\\',
    )
}

/// The first byte at or after `from` that a JSON string must escape.
pub(crate) fn needs_escape(b: &[u8], from: usize) -> Option<usize> {
    scan(
        b,
        from,
        |x| eq(x, b'"') | eq(x, b'\\') | control(x),
        |c| c == b'"' || c == b'\\' || c < 0x20,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn agrees_with_a_byte_loop(s in prop::collection::vec(any::<u8>(), 0..40), from in 0usize..40) {
            let from = from.min(s.len());
            let want = s[from..].iter().position(|&c| c == b'"' || c == b'\\').map(|p| p + from);
            prop_assert_eq!(quote_or_backslash(&s, from), want);
            let want = s[from..].iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20).map(|p| p + from);
            prop_assert_eq!(needs_escape(&s, from), want);
        }
    }
}
