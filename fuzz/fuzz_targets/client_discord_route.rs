//! Discord route classification from arbitrary paths: never a panic, and tokens never reach the key.
#![no_main]

use http::{HeaderMap, Method, Uri};
use libfuzzer_sys::fuzz_target;
use ratelimit_client::profile::{Discord, Profile};

fuzz_target!(|data: &[u8]| {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(uri) = Uri::try_from(format!(
        "https://discord.com{}",
        path.replace(char::is_whitespace, "")
    )) else {
        return;
    };
    for method in [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ] {
        let route = Discord::new().classify(&method, &uri, &HeaderMap::new());
        // Long opaque segments (tokens) never appear in route keys.
        assert!(route
            .key
            .split('/')
            .all(|seg| seg.len() <= 64 || seg.contains('{')));
    }
});
