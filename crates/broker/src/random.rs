//! Randomness from the operating system (getrandom), nothing seeded in process.

use crate::BrokerError;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `n` characters from `[0-9A-Za-z]`, uniformly: bytes ≥ 248 (= 4 × 62) are rejected, so every
/// character carries log2(62) ≈ 5.95 bits.
pub(crate) fn base62(n: usize) -> Result<String, BrokerError> {
    let mut out = String::with_capacity(n);
    let mut buf = [0u8; 64];
    while out.len() < n {
        getrandom::fill(&mut buf).map_err(BrokerError::random)?;
        for b in buf {
            if out.len() == n {
                break;
            }
            if b < 248 {
                out.push(char::from(BASE62[usize::from(b % 62)]));
            }
        }
    }
    buf.iter_mut().for_each(|b| *b = 0);
    Ok(out)
}

/// `n` random bytes as lower-case hex.
pub(crate) fn hex_id(n: usize) -> Result<String, BrokerError> {
    let mut buf = vec![0u8; n];
    getrandom::fill(&mut buf).map_err(BrokerError::random)?;
    Ok(hex::encode(buf))
}

/// A random `u64`; 0 if the generator fails (only used for retry jitter).
pub(crate) fn jitter_u64() -> u64 {
    getrandom::u64().unwrap_or(0)
}
