//! # discord-sim
//!
//! A deterministic, in-process fake of Discord's REST rate limits, served over HTTP on loopback, so that
//! `ratelimit-client` (or any Discord client) can be tested and benchmarked without a Discord account.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> std::io::Result<()> {
//! use discord_sim::{Scenario, Simulator};
//!
//! let scenario = Scenario::mixed();
//! let sim = Simulator::start(scenario.config.clone()).await?;
//! // Point a client at `sim.base_url()` (http://127.0.0.1:PORT/api/v10) with `Authorization: Bot sim-token`,
//! // send `scenario.operations`, then read what the simulator saw:
//! let stats = sim.stats();
//! assert_eq!(stats.non_shared_429(), 0);
//! # Ok(()) }
//! ```
//!
//! ## What it models
//!
//! The behaviour described in the project's research notes (`discord-client.md`, section (a) and A.11):
//!
//! * **Route buckets** ([`RouteConfig`]): `(method, template)` → a reported limit with a bucket hash
//!   (excluding the major parameter), counted per major parameter (`channels/{id}`, `guilds/{id}`,
//!   `webhooks/{id}/{token}`) or across majors; routes that report one hash either share one counter
//!   ([`CounterMode::SharedByHash`], reactions) or keep one each ([`CounterMode::PerRoute`], `POST` vs
//!   `PATCH` message). Routes with no bucket send no `X-RateLimit-*` headers.
//! * **Windows** ([`Window`]): fixed (opens on the first request, resets whole) or leaky (one unit drains
//!   every `period / limit`, `Reset-After` moves with every response).
//! * **Layered limits** ([`LayeredLimit`]): hidden limits counted with the reported one, whose 429 carries
//!   their own hash and numbers.
//! * **Sub-limits** ([`SubLimit`]): a hidden per-route limit on requests with given body fields; its 429 has
//!   scope `user` but `Remaining > 0`.
//! * **Shared scope** ([`SharedStorm`]): a resource contended by others answers 429 `shared` with the
//!   caller's own bucket headers and an overriding `Retry-After`; not counted as invalid.
//! * **The global limit** ([`GlobalLimit`]): per token (per IP without one), a sliding log of at most N per
//!   period, checked before the route; interaction callbacks and tokened webhooks are exempt.
//! * **The invalid-request ban** ([`BanConfig`]): N responses of 401, 403 or non-shared 429 from one IP
//!   within a window ban it (every 4xx of a route with [`RouteConfig::errors_count_as_invalid`], such as a
//!   deleted webhook's 404s); then every request gets a Cloudflare-style 429 with no `X-RateLimit-*` and no
//!   `Via` header.
//! * **Hashes that move**: a route can rotate its reported hash over one counter
//!   ([`RouteConfig::alternate_hashes`], dapi#1295) or pick its bucket by the age of a snowflake in the path
//!   ([`RouteConfig::by_snowflake_age`], message deletion, dapi#8330).
//! * **Hostile values** ([`HeaderFault`]): a route can send NaN, negative, huge, non-numeric or absurd
//!   rate-limit values while still enforcing the real limit, to test a client's defences.
//! * **Tokens**: `Authorization: Bot <token>` must name a configured token; anything else gets 401;
//!   [`RunningSim::revoke_token`] invalidates one mid-test.
//! * **Latency** ([`Latency`]): fixed or uniform in a range, drawn from a seeded RNG, half before admission
//!   and half after by default ([`SimConfig::inbound_percent`] models an asymmetric path).
//!
//! ## The order of checks
//!
//! ban → token (401) → route (404 when none matches) → global (429 `global`) → reported limit and layers
//! (429 `user`, nothing counted) → sub-limit (429 `user`, `Remaining > 0`) → shared storm (429 `shared`)
//! → admitted: every counter counts it, whatever its status (a 403 route counts too).
//!
//! ## Headers, as Discord sends them (notes A.4, A.5)
//!
//! `X-RateLimit-Limit`, `X-RateLimit-Remaining` (after this request), `X-RateLimit-Reset` (epoch seconds
//! with three decimals), `X-RateLimit-Reset-After` (seconds, three decimals, rounded up to the
//! millisecond), `X-RateLimit-Bucket`; on 429s `X-RateLimit-Scope` (`user`, `shared`, `global`),
//! `X-RateLimit-Global: true` on global ones (which carry no bucket headers), an integer `Retry-After`
//! (rounded up) and the JSON body `{"message", "retry_after" (precise, seconds), "global", "code"}`.
//! Genuine responses carry `Via: 1.1 google`; ban responses do not.
//!
//! ## Time
//!
//! The simulator reads tokio's monotonic clock, so tests may run in real time with short windows (100 ms to
//! 1 s; see [`SimConfig::scaled`]). `X-RateLimit-Reset` is derived from the wall clock at start plus the
//! monotonic offset, optionally skewed ([`SimConfig::reset_skew_ms`]).
//!
//! Under tokio's paused clock (`#[tokio::test(start_paused = true)]`) windows and latency follow virtual
//! time, so a test can wait out a 10-second window instantly (`tests/paused.rs`). Tokio advances a paused
//! clock whenever every task waits, including on socket I/O, so with many requests in flight assert on
//! counts and headers rather than exact instants.
//!
//! ## Measuring a client
//!
//! [`RunningSim::stats`] returns [`SimStats`]: responses by kind and, for every counter, the admission
//! times. [`BucketStats::utilisation`] is admissions ÷ the most the limit allows in the span they took;
//! [`Scenario::lower_bound`] is the earliest any client can finish a scenario
//! ([`Scenario::lower_bound_with_storms`] also counts the shared storms no client can avoid), and
//! [`BucketStats::probing_finish`] the earliest a client that probes could have finished with a run's
//! latency draws. [`BucketStats::latencies`] holds the latency drawn for every admission.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used))]

mod config;
mod engine;
#[cfg(feature = "clients")]
pub mod reference;
mod rng;
mod route;
mod scenario;
mod server;
mod stats;

pub use config::{
    AgeTier, BanBody, BanConfig, ConfigError, CounterMode, GlobalLimit, HeaderFault, Latency,
    LayeredLimit, Limit, RouteConfig, SharedStorm, SimConfig, StormTrigger, SubLimit, Window,
    DEFAULT_TOKEN,
};
pub use scenario::{
    Operation, Scenario, HASH_CHANNEL_EDIT, HASH_DELETE, HASH_DELETE_OLD, HASH_DELETE_RECENT,
    HASH_LAYER_BIG, HASH_LAYER_SMALL, HASH_MESSAGES, HASH_REACTIONS, HASH_ROLES, HASH_WEBHOOK,
};
pub use server::{RunningSim, Simulator, API_PREFIX};
pub use stats::{BucketStats, SimStats};
