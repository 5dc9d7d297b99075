//! Configuration parsing (ratelimit-core's `serde` feature): arbitrary TOML and JSON documents never make
//! the quota, policy or policy-set readers panic, and whatever they accept serializes back to a document
//! that reads as the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ratelimit_core::{config, PolicySet, Quota};

#[derive(serde::Deserialize, serde::Serialize, PartialEq, Debug)]
struct Doc {
    set: PolicySet,
    quota: Option<Quota>,
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(de) = toml::Deserializer::parse(text) {
        if let Ok(doc) = config::from_deserializer::<Doc, _>(de) {
            let back = toml::to_string(&doc).expect("an accepted document serializes");
            let again: Doc = toml::from_str(&back).expect("what was written reads back");
            assert_eq!(again, doc);
        }
    }
    if let Ok(doc) = config::from_deserializer::<Doc, _>(&mut serde_json::Deserializer::from_str(text)) {
        let back = serde_json::to_string(&doc).expect("an accepted document serializes");
        let again: Doc = serde_json::from_str(&back).expect("what was written reads back");
        assert_eq!(again, doc);
    }
});
