//! Everything `faramesh audit verify` reads from outside the daemon: proof bundles, exported
//! records, signed checkpoint notes and verifier keys. Arbitrary bytes must give an error or a
//! value, never a crash; a record that reads must re-read identically from its own JSON.
#![no_main]

use audit::bundle::Bundle;
use audit::note::{Checkpoint, VerifierKey};
use audit::record::Stored;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(stored) = Stored::from_json(text) {
        let again = Stored::from_json(&stored.to_json()).expect("a record re-reads from its JSON");
        assert_eq!(again, stored);
        let _ = stored.dpr.hash();
    }
    if let Ok(bundle) = serde_json::from_str::<Bundle>(text) {
        let _ = bundle.verify(None);
    }
    let _ = Checkpoint::parse(text);
    if let Ok(key) = VerifierKey::from_text(text) {
        let _ = key.open(text);
    }
});
