//! Signed checkpoints in the C2SP formats: a `tlog-checkpoint` body (origin, tree size, root
//! hash, and a `time` extension line) inside a `signed-note`, with Ed25519 signatures whose key
//! ID is the first four bytes of `SHA-256(name || "\n" || 0x01 || public key)`.
//!
//! Signing goes through the [`Signer`] trait so a KMS can hold the key; [`LocalKey`] is the
//! default, an Ed25519 key generated per stack and kept in a file only its owner can read.

use std::fmt;
use std::io::Write;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::record::{Hash, push_hex};
use crate::time::{format_ms, parse_ms};

/// The C2SP signature type byte of Ed25519.
const ED25519: u8 = 0x01;
/// The dash that starts a signature line: U+2014 and a space.
const SIG_PREFIX: &str = "\u{2014} ";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NoteError {
    #[error("the note is not a signed note: {0}")]
    Malformed(String),
    #[error("no signature by key `{name}` ({key_id}) on the note")]
    Unsigned { name: String, key_id: String },
    #[error("the signature by key `{0}` does not verify")]
    BadSignature(String),
    #[error("the key text is not a valid verifier key: {0}")]
    BadKey(String),
    #[error("the signer failed: {0}")]
    Signer(String),
}

/// What signs checkpoints. A KMS provider implements this; [`LocalKey`] is the default.
pub trait Signer: Send + Sync + fmt::Debug {
    /// The public half, which verifiers are given.
    fn verifier(&self) -> VerifierKey;
    /// An Ed25519 signature over `message`.
    fn sign(&self, message: &[u8]) -> Result<[u8; 64], NoteError>;
}

/// A public key that checks notes: its name, key ID and Ed25519 key.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifierKey {
    pub name: String,
    key: VerifyingKey,
}

impl fmt::Debug for VerifierKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_text())
    }
}

impl VerifierKey {
    pub fn new(name: &str, key: VerifyingKey) -> Result<VerifierKey, NoteError> {
        if name.is_empty() || name.contains(['+', ' ', '\n', '\t']) {
            return Err(NoteError::BadKey(format!("invalid key name `{name}`")));
        }
        Ok(VerifierKey {
            name: name.to_owned(),
            key,
        })
    }

    pub fn key_id(&self) -> [u8; 4] {
        let mut h = Sha256::new();
        h.update(self.name.as_bytes());
        h.update([b'\n', ED25519]);
        h.update(self.key.as_bytes());
        let d = h.finalize();
        [d[0], d[1], d[2], d[3]]
    }

    /// The C2SP verifier key text: `<name>+<key id hex>+<base64(0x01 || key)>`.
    pub fn to_text(&self) -> String {
        let mut raw = vec![ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        let mut id = String::new();
        push_hex(&mut id, &self.key_id());
        format!("{}+{}+{}", self.name, id, B64.encode(raw))
    }

    pub fn from_text(text: &str) -> Result<VerifierKey, NoteError> {
        // The base64 key may itself contain `+`.
        let mut parts = text.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(NoteError::BadKey("expected <name>+<id>+<key>".into()));
        };
        let raw = B64
            .decode(key)
            .map_err(|e| NoteError::BadKey(format!("the key is not base64: {e}")))?;
        let bytes: [u8; 32] = match raw.split_first() {
            Some((&ED25519, rest)) => rest
                .try_into()
                .map_err(|_| NoteError::BadKey("an Ed25519 key has 32 bytes".into()))?,
            _ => {
                return Err(NoteError::BadKey(
                    "only Ed25519 keys (type 0x01) are supported".into(),
                ));
            }
        };
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|e| NoteError::BadKey(format!("not an Ed25519 point: {e}")))?;
        let vk = VerifierKey::new(name, key)?;
        let mut want = String::new();
        push_hex(&mut want, &vk.key_id());
        if want != id {
            return Err(NoteError::BadKey(format!(
                "key id {id} does not match the key ({want})"
            )));
        }
        Ok(vk)
    }

    /// Checks that `note` carries a valid signature by this key, and returns its text (the
    /// part that was signed).
    pub fn open<'n>(&self, note: &'n str) -> Result<&'n str, NoteError> {
        let (text, sigs) = split_note(note)?;
        let id = self.key_id();
        let mut found = false;
        for line in sigs.lines() {
            let Some(rest) = line.strip_prefix(SIG_PREFIX) else {
                return Err(NoteError::Malformed(format!("bad signature line `{line}`")));
            };
            let Some((name, sig)) = rest.split_once(' ') else {
                return Err(NoteError::Malformed(format!("bad signature line `{line}`")));
            };
            let raw = B64
                .decode(sig)
                .map_err(|_| NoteError::Malformed("a signature is not base64".into()))?;
            if name != self.name || raw.len() < 4 || raw[..4] != id {
                continue;
            }
            found = true;
            let sig = Signature::from_slice(&raw[4..])
                .map_err(|_| NoteError::BadSignature(self.name.clone()))?;
            if self.key.verify_strict(text.as_bytes(), &sig).is_ok() {
                return Ok(text);
            }
        }
        let mut key_id = String::new();
        push_hex(&mut key_id, &id);
        if found {
            Err(NoteError::BadSignature(self.name.clone()))
        } else {
            Err(NoteError::Unsigned {
                name: self.name.clone(),
                key_id,
            })
        }
    }
}

/// Splits a signed note into its text (ending in a newline) and its signature lines.
fn split_note(note: &str) -> Result<(&str, &str), NoteError> {
    let at = note
        .find("\n\n")
        .ok_or_else(|| NoteError::Malformed("no blank line before the signatures".into()))?;
    let (text, sigs) = (&note[..=at], &note[at + 2..]);
    if sigs.is_empty() || !sigs.ends_with('\n') {
        return Err(NoteError::Malformed(
            "the signature block must end in a newline".into(),
        ));
    }
    Ok((text, sigs))
}

/// Signs `text` (which must end in a newline and hold no blank line) into a signed note.
pub fn sign_note(text: &str, signer: &dyn Signer) -> Result<String, NoteError> {
    if !text.ends_with('\n') || text.contains("\n\n") {
        return Err(NoteError::Malformed(
            "a note text ends in one newline and has no blank line".into(),
        ));
    }
    let vk = signer.verifier();
    let sig = signer.sign(text.as_bytes())?;
    let mut raw = Vec::with_capacity(68);
    raw.extend_from_slice(&vk.key_id());
    raw.extend_from_slice(&sig);
    Ok(format!(
        "{text}\n{SIG_PREFIX}{} {}\n",
        vk.name,
        B64.encode(raw)
    ))
}

/// A tree head of one chain: the body of a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    pub time_ms: i64,
}

impl Checkpoint {
    /// The origin line of chain `chain`.
    pub fn origin_of(chain: &str) -> String {
        format!("faramesh/audit/{chain}")
    }

    pub fn to_text(&self) -> String {
        format!(
            "{}\n{}\n{}\ntime {}\n",
            self.origin,
            self.size,
            B64.encode(self.root.0),
            format_ms(self.time_ms)
        )
    }

    pub fn parse(text: &str) -> Result<Checkpoint, NoteError> {
        let bad = |m: &str| NoteError::Malformed(format!("checkpoint: {m}"));
        let mut lines = text.lines();
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or_else(|| bad("no origin"))?;
        let size = lines
            .next()
            .and_then(|s| s.parse::<u64>().ok().filter(|_| !s.starts_with('+')))
            .ok_or_else(|| bad("the second line is not a tree size"))?;
        let root: [u8; 32] = lines
            .next()
            .and_then(|r| B64.decode(r).ok())
            .and_then(|r| r.try_into().ok())
            .ok_or_else(|| bad("the third line is not a base64 SHA-256 root"))?;
        let mut time_ms = None;
        for ext in lines {
            if let Some(t) = ext.strip_prefix("time ") {
                time_ms = Some(parse_ms(t).ok_or_else(|| bad("bad time line"))?);
            }
        }
        Ok(Checkpoint {
            origin: origin.to_owned(),
            size,
            root: Hash(root),
            time_ms: time_ms.ok_or_else(|| bad("no time line"))?,
        })
    }

    pub fn sign(&self, signer: &dyn Signer) -> Result<String, NoteError> {
        sign_note(&self.to_text(), signer)
    }

    /// Verifies a signed checkpoint note with `key` and reads it.
    pub fn open(note: &str, key: &VerifierKey) -> Result<Checkpoint, NoteError> {
        Checkpoint::parse(key.open(note)?)
    }
}

/// An Ed25519 key held in this process.
pub struct LocalKey {
    name: String,
    key: SigningKey,
}

impl fmt::Debug for LocalKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LocalKey({})", self.name)
    }
}

impl LocalKey {
    /// A new random key.
    pub fn generate(name: &str) -> Result<LocalKey, NoteError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| NoteError::Signer(format!("no randomness: {e}")))?;
        let key = LocalKey {
            name: name.to_owned(),
            key: SigningKey::from_bytes(&seed),
        };
        key.verifier_checked()?;
        Ok(key)
    }

    fn verifier_checked(&self) -> Result<VerifierKey, NoteError> {
        VerifierKey::new(&self.name, self.key.verifying_key())
    }

    /// The C2SP signer key text: `PRIVATE+KEY+<name>+<id>+<base64(0x01 || seed)>`.
    pub fn to_text(&self) -> String {
        let vk = self.verifier();
        let mut raw = vec![ED25519];
        raw.extend_from_slice(self.key.as_bytes());
        let mut id = String::new();
        push_hex(&mut id, &vk.key_id());
        format!("PRIVATE+KEY+{}+{}+{}", self.name, id, B64.encode(raw))
    }

    pub fn from_text(text: &str) -> Result<LocalKey, NoteError> {
        let rest = text
            .trim()
            .strip_prefix("PRIVATE+KEY+")
            .ok_or_else(|| NoteError::BadKey("a signer key starts with PRIVATE+KEY+".into()))?;
        let mut parts = rest.splitn(3, '+');
        let (Some(name), Some(_id), Some(seed), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(NoteError::BadKey(
                "expected PRIVATE+KEY+<name>+<id>+<key>".into(),
            ));
        };
        let raw = B64
            .decode(seed)
            .map_err(|_| NoteError::BadKey("the key is not base64".into()))?;
        let seed: [u8; 32] = match raw.split_first() {
            Some((&ED25519, rest)) => rest
                .try_into()
                .map_err(|_| NoteError::BadKey("an Ed25519 seed has 32 bytes".into()))?,
            _ => return Err(NoteError::BadKey("only Ed25519 keys are supported".into())),
        };
        let key = LocalKey {
            name: name.to_owned(),
            key: SigningKey::from_bytes(&seed),
        };
        key.verifier_checked()?;
        Ok(key)
    }

    /// Loads the key at `path`, or creates one there (mode 0600) with its verifier key beside
    /// it (`<path>.pub`, readable by all).
    pub fn load_or_create(path: &Path, name: &str) -> std::io::Result<LocalKey> {
        let invalid =
            |e: NoteError| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string());
        match std::fs::read_to_string(path) {
            Ok(text) => return LocalKey::from_text(&text).map_err(invalid),
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            Err(_) => {}
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let key = LocalKey::generate(name).map_err(invalid)?;
        write_private(path, &key.to_text())?;
        std::fs::write(public_path(path), key.verifier().to_text() + "\n")?;
        Ok(key)
    }
}

/// Where the verifier key of the signer key at `path` is kept.
pub fn public_path(path: &Path) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".pub");
    p.into()
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}

impl Signer for LocalKey {
    fn verifier(&self) -> VerifierKey {
        VerifierKey {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    fn sign(&self, message: &[u8]) -> Result<[u8; 64], NoteError> {
        use ed25519_dalek::Signer as _;
        Ok(self.key.sign(message).to_bytes())
    }
}
