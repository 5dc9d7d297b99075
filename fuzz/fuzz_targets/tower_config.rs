//! The layer's configuration file (ratelimit-tower's `toml` feature): arbitrary TOML and JSON documents
//! never make `LayerConfig`'s readers or validation panic, an error always names a path, and whatever
//! they accept writes back to a document that reads as the same configuration and builds a layer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ratelimit_tower::config::LayerConfig;
use ratelimit_tower::RateLimitLayer;

fn accepted(config: &LayerConfig) {
    let back = toml::to_string(config).expect("an accepted configuration serializes");
    let again = LayerConfig::from_toml(&back).expect("what was written reads back");
    assert_eq!(&again, config);
    let back = serde_json::to_string(config).expect("an accepted configuration serializes");
    let again = LayerConfig::from_deserializer(&mut serde_json::Deserializer::from_str(&back))
        .expect("what was written reads back");
    assert_eq!(&again, config);
    config
        .configure(RateLimitLayer::builder())
        .build()
        .expect("an accepted configuration builds a layer");
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match LayerConfig::from_toml(text) {
        Ok(config) => accepted(&config),
        Err(e) => assert!(!e.message().is_empty()),
    }
    let json = LayerConfig::from_deserializer(&mut serde_json::Deserializer::from_str(text));
    match json {
        Ok(config) => accepted(&config),
        Err(e) => assert!(!e.message().is_empty()),
    }
});
