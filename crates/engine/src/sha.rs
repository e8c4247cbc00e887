//! SHA-256 on the block function itself (`sha2::compress256`), and HMACs run side by side with
//! a digest.
//!
//! A decision hashes its canonical args (`args_digest`) and HMACs each redacted value: eight
//! runs of the block function for the benchmark's call, about a quarter of the decision. The
//! rounds of a block are a chain of dependent instructions, which leaves the CPU's SHA unit
//! half idle; given blocks of two independent messages in turn, it runs both chains at once.
//! The benchmark's eight blocks take 365 ns one message after another and 287 ns side by side,
//! on the benchmark machine (docs/performance.md).

use sha2::digest::generic_array::GenericArray;

/// A SHA-256 state: eight words.
pub(crate) type State = [u32; 8];

/// The initial SHA-256 state (FIPS 180-4 §5.3.3).
pub(crate) const H0: State = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// SHA-256 of `msg`: without the buffering of a streaming hasher, which costs more than the
/// padding here.
pub(crate) fn sha256(msg: &[u8]) -> [u8; 32] {
    big_endian(Lane::new(H0, 0, msg).finish())
}

/// A state's words as the digest's bytes.
pub(crate) fn big_endian(state: State) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (bytes, word) in out.chunks_exact_mut(4).zip(state) {
        bytes.copy_from_slice(&word.to_be_bytes());
    }
    out
}

/// The state after one 64-byte block.
pub(crate) fn after_block(mut state: State, block: [u8; 64]) -> State {
    compress(&mut state, &block);
    state
}

/// A message being hashed a block at a time: its state, the whole blocks still to go, and its
/// last bytes, padded (FIPS 180-4 §5.1.1: 0x80, zeros, the length in bits).
#[derive(Debug)]
pub(crate) struct Lane<'m> {
    state: State,
    whole: &'m [u8],
    last: [u8; 64],
    /// The message's length in bits, big-endian.
    bits: [u8; 8],
    /// Blocks of `last` still to run: 2 when the length needs a block of its own (then made
    /// in `last` after the first), 1 when it is in `last`, 0 when the hash is done.
    left: u8,
}

impl<'m> Lane<'m> {
    /// `msg` after `before` bytes (a whole number of blocks) that left `state`.
    #[inline(always)]
    pub(crate) fn new(state: State, before: u64, msg: &'m [u8]) -> Self {
        let (whole, rest) = msg.split_at(msg.len() - msg.len() % 64);
        let mut lane = Lane {
            state,
            whole,
            last: [0; 64],
            bits: before
                .wrapping_add(msg.len() as u64)
                .wrapping_mul(8)
                .to_be_bytes(),
            left: 1,
        };
        lane.last[..rest.len()].copy_from_slice(rest);
        lane.last[rest.len()] = 0x80;
        // No room for the length after the 0x80: it goes in a block of its own.
        if rest.len() >= 56 {
            lane.left = 2;
        } else {
            lane.last[56..].copy_from_slice(&lane.bits);
        }
        lane
    }

    /// Runs the block function on the next block; false when none was left.
    #[inline(always)]
    fn step(&mut self) -> bool {
        if let Some((block, rest)) = self.whole.split_first_chunk::<64>() {
            compress(&mut self.state, block);
            self.whole = rest;
            return true;
        }
        match self.left {
            0 => return false,
            1 => compress(&mut self.state, &self.last),
            _ => {
                compress(&mut self.state, &self.last);
                self.last = [0; 64];
                self.last[56..].copy_from_slice(&self.bits);
            }
        }
        self.left -= 1;
        true
    }

    /// The state at the end of the message.
    pub(crate) fn finish(mut self) -> State {
        while self.step() {}
        self.state
    }
}

/// The block function on one block, passed by reference (a `GenericArray` made from an array
/// would be a copy).
#[inline(always)]
fn compress(state: &mut State, block: &[u8; 64]) {
    sha2::compress256(state, std::slice::from_ref(GenericArray::from_slice(block)));
}

/// The one padded block of a message of under 56 bytes after `before` bytes.
#[inline(always)]
fn short_block(before: u64, msg: &[u8]) -> [u8; 64] {
    let mut block = [0u8; 64];
    block[..msg.len()].copy_from_slice(msg);
    block[msg.len()] = 0x80;
    block[56..].copy_from_slice(&(before + msg.len() as u64).wrapping_mul(8).to_be_bytes());
    block
}

/// The outer hash's one block: the inner digest, from its state, padded.
#[inline(always)]
fn outer_block(inner: State) -> [u8; 64] {
    let mut block = [0u8; 64];
    for (bytes, word) in block.chunks_exact_mut(4).zip(inner) {
        bytes.copy_from_slice(&word.to_be_bytes());
    }
    block[32] = 0x80;
    block[56..].copy_from_slice(&((64u64 + 32) * 8).to_be_bytes());
    block
}

/// HMAC-SHA256 of a message whose inner hash left `inner`, under the key whose outer padded
/// block left `outer`.
fn outer(mut outer: State, inner: State) -> [u8; 32] {
    compress(&mut outer, &outer_block(inner));
    big_endian(outer)
}

/// HMAC-SHA256 (RFC 2104) of `msg` under the key whose inner and outer padded blocks left
/// `inner` and `outer`.
pub(crate) fn hmac(inner: State, outer_state: State, msg: &[u8]) -> [u8; 32] {
    outer(outer_state, Lane::new(inner, 64, msg).finish())
}

/// How many HMACs [`digest_and_hmacs`] computes side by side with the digest.
pub(crate) const SIDE_BY_SIDE: usize = 4;

/// SHA-256 of `text` and, side by side, the HMAC-SHA256 of each of the first
/// [`SIDE_BY_SIDE`] messages of `msgs` under the key whose padded blocks left `inner` and
/// `outer`: a block of the digest runs with each block of an HMAC. Returns the digest and a
/// bit set per HMAC written into `hmacs` (bit `i` for `hmacs[i]`); a `None` message gets none.
pub(crate) fn digest_and_hmacs<'m>(
    text: &'m [u8],
    msgs: impl Iterator<Item = Option<&'m [u8]>>,
    (inner, outer_state): (State, State),
    hmacs: &mut [[u8; 32]; SIDE_BY_SIDE],
) -> ([u8; 32], u8) {
    let mut digest = Lane::new(H0, 0, text);
    // Blocks are made well before the block function reads them: read right after they are
    // written, piecewise, they would wait for the writes to reach the cache.
    let mut blocks = [[0u8; 64]; SIDE_BY_SIDE];
    let mut longs: [Option<&[u8]>; SIDE_BY_SIDE] = [None; SIDE_BY_SIDE];
    let mut have = 0;
    for ((i, block), msg) in blocks.iter_mut().enumerate().zip(msgs) {
        let Some(msg) = msg else {
            continue;
        };
        if msg.len() < 56 {
            *block = short_block(64, msg);
        } else {
            longs[i] = Some(msg);
        }
        have |= 1 << i;
    }
    let mut states = [inner; SIDE_BY_SIDE];
    for (i, (state, block)) in states.iter_mut().zip(&blocks).enumerate() {
        if have & (1 << i) == 0 {
            continue;
        }
        match longs[i] {
            None => {
                compress(state, block);
                digest.step();
            }
            Some(msg) => {
                let mut lane = Lane::new(inner, 64, msg);
                while lane.step() {
                    digest.step();
                }
                *state = lane.state;
            }
        }
    }
    for (block, state) in blocks.iter_mut().zip(states) {
        *block = outer_block(state);
    }
    for (i, (hmac, block)) in hmacs.iter_mut().zip(&blocks).enumerate() {
        if have & (1 << i) != 0 {
            digest.step();
            let mut state = outer_state;
            compress(&mut state, block);
            *hmac = big_endian(state);
        }
    }
    (big_endian(digest.finish()), have)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac as _};
    use proptest::prelude::*;
    use sha2::{Digest, Sha256};

    type HmacSha256 = Hmac<Sha256>;

    /// The states after a key's inner and outer padded blocks (RFC 2104).
    fn key_states(key: &[u8; 32]) -> (State, State) {
        let keyed = |pad: u8| {
            let mut block = [pad; 64];
            for (x, k) in block.iter_mut().zip(key) {
                *x ^= k;
            }
            after_block(H0, block)
        };
        (keyed(0x36), keyed(0x5c))
    }

    fn reference_hmac(key: &[u8; 32], msg: &[u8]) -> [u8; 32] {
        let mut mac = HmacSha256::new_from_slice(key).unwrap();
        mac.update(msg);
        mac.finalize().into_bytes().into()
    }

    fn message() -> impl Strategy<Value = Vec<u8>> {
        // Every length around the one- and two-block paddings, and longer ones.
        prop::collection::vec(any::<u8>(), 0..300)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1_000))]

        #[test]
        fn sha256_is_the_streaming_hashers(msg in message()) {
            prop_assert_eq!(sha256(&msg), <[u8; 32]>::from(Sha256::digest(&msg)));
        }

        #[test]
        fn hmac_is_the_hmac_crates(key in any::<[u8; 32]>(), msg in message()) {
            let (inner, outer) = key_states(&key);
            prop_assert_eq!(hmac(inner, outer, &msg), reference_hmac(&key, &msg));
        }

        /// Side by side gives what one at a time does, whatever the lengths and gaps.
        #[test]
        fn side_by_side_is_one_at_a_time(
            key in any::<[u8; 32]>(),
            text in message(),
            msgs in prop::collection::vec(prop::option::of(message()), 0..7),
        ) {
            let mut hmacs = [[0; 32]; SIDE_BY_SIDE];
            let (digest, have) = digest_and_hmacs(
                &text,
                msgs.iter().map(|m| m.as_deref()),
                key_states(&key),
                &mut hmacs,
            );
            prop_assert_eq!(digest, sha256(&text));
            for (i, hmac) in hmacs.iter().enumerate() {
                let want = msgs.get(i).and_then(|m| m.as_deref()).map(|m| reference_hmac(&key, m));
                let got = (have & (1 << i) != 0).then_some(*hmac);
                prop_assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn known_digests() {
        // FIPS 180-4 examples: one block, and a message whose length needs a block of its own.
        assert_eq!(
            hex::encode(sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex::encode(sha256(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }
}
