//! The number parsers under every upstream header: exact seconds and strict integers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ratelimit_client::parse::{parse_seconds, parse_u64};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(us) = parse_seconds(s) {
        // Whatever parsed is digits with at most one dot, and round-trips to the same whole seconds.
        let whole = s.split('.').next().unwrap_or("");
        if !whole.is_empty() {
            assert_eq!(us / 1_000_000, whole.parse::<u64>().unwrap());
        }
    }
    if let Some(n) = parse_u64(s) {
        assert_eq!(
            n.to_string().trim_start_matches('0'),
            s.trim_start_matches('0')
        );
    }
});
