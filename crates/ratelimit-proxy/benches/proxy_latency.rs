//! Added latency of the proxy (filled in by a later commit).
fn main() {}
