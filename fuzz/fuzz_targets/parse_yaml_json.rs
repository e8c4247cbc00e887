//! Arbitrary UTF-8 text through the YAML and JSON readers (`governance.fms.yaml` / `.json`).
//! Whatever deserializes is also run through the checker, which must not panic on it.
#![no_main]

use fpl::check::{CheckEnv, check};
use fpl::load::{Format, parse_text};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let env = |_: &str| None;
    for format in [Format::Yaml, Format::Json] {
        let (policy, diagnostics) = parse_text(text, format);
        if diagnostics.iter().any(fpl::Diagnostic::is_error) {
            continue;
        }
        std::hint::black_box(check(
            &policy,
            &CheckEnv {
                source: None,
                env: &env,
            },
        ));
        // The formatter must print anything the readers accept.
        std::hint::black_box(fpl::format::format_policy(&policy));
    }
});
