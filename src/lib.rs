//! The `ratelimit` workspace's examples, end-to-end tests and benchmarks. Not published, and nothing to
//! depend on: a server depends on [`ratelimit-tower`](https://docs.rs/ratelimit-tower), a client on
//! [`ratelimit-client`](https://docs.rs/ratelimit-client), and code that only needs the algorithms and
//! stores on [`ratelimit-core`](https://docs.rs/ratelimit-core).
