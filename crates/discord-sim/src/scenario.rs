//! Scenarios shared by tests, the `discord_sim` example and benchmarks: a configuration plus the
//! operations a client issues at once, and the lower bound the limits put on finishing them.

use std::collections::HashMap;
use std::time::Duration;

use http::{Method, StatusCode};

use crate::config::{
    AgeTier, Latency, Limit, RouteConfig, SharedStorm, SimConfig, StormTrigger, Window,
};
use crate::engine::{match_route, sub_limit_applies, Engine};
use crate::route::Template;

/// Bucket hash of `POST`/`PATCH` messages (one hash, one counter per route: dapi#8073).
pub const HASH_MESSAGES: &str = "80c17d2f203122d936070c88c8d10f33";
/// Bucket hash of every reaction route (one shared counter: dapi#981).
pub const HASH_REACTIONS: &str = "e4f2bd4c9bd6d5b22ff8c8cda1ed2c4a";
/// Bucket hash of member role add/remove (one shared counter).
pub const HASH_ROLES: &str = "4a6f9e7c0e1a3a3f8f3e2d5b7c6a9e10";
/// Bucket hash of `PATCH /channels/{channel_id}`.
pub const HASH_CHANNEL_EDIT: &str = "1d2e5a8e7c3b4f6a9b0c1d2e3f4a5b6c";
/// Bucket hash of webhook execution.
pub const HASH_WEBHOOK: &str = "d1a2b3c4e5f60718293a4b5c6d7e8f90";
/// Bucket hash of deleting a message younger than 10 s (dapi#8330).
pub const HASH_DELETE: &str = "9a4e0c7d2b8f1e3a5c6d7e8f9a0b1853";
/// Bucket hash of deleting a message between 10 s and 14 days old.
pub const HASH_DELETE_RECENT: &str = "c51d2e3f4a5b6c7d8e9f0a1b2c3d4d45";
/// Bucket hash of deleting a message older than 14 days.
pub const HASH_DELETE_OLD: &str = "b5e3f4a5b6c7d8e9f0a1b2c3d4e5fad6";
/// The large bucket a layered route reports until its hidden limit trips (dapi#5646).
pub const HASH_LAYER_BIG: &str = "b0f3c2a1d4e5f60718293a4b5c6d7e8f";
/// The hidden layered limit's hash.
pub const HASH_LAYER_SMALL: &str = "5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b";

const REACTION_BASE: &str = "/channels/{channel_id}/messages/{message_id}/reactions";

/// One request a scenario issues.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// The method.
    pub method: Method,
    /// The path under the base URL, for example `/channels/100/messages`.
    pub path: String,
    /// A JSON body, if any.
    pub body: Option<String>,
    /// Whether the request carries `Authorization: Bot <token>` (webhook executions need not).
    pub authorized: bool,
}

impl Operation {
    /// An authorized request.
    pub fn new(method: Method, path: impl Into<String>, body: Option<String>) -> Self {
        Self {
            method,
            path: path.into(),
            body,
            authorized: true,
        }
    }

    /// The full URL under `base_url` (as given by [`crate::RunningSim::base_url`]).
    pub fn url(&self, base_url: &str) -> String {
        format!("{}{}", base_url.trim_end_matches('/'), self.path)
    }
}

/// A configuration and the operations a client issues against it all at once.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// A short name (`mixed`, `parallel`, `parallel-leaky`, `sublimit`, `layered`).
    pub name: &'static str,
    /// What it models.
    pub description: &'static str,
    /// The simulator's configuration.
    pub config: SimConfig,
    /// The operations, in the order they are issued.
    pub operations: Vec<Operation>,
}

impl Scenario {
    /// The issue's first run, time scaled by 1/10: 312 operations issued at once, 200 messages over 10
    /// channels, 100 reactions (10 per channel), 12 role adds, and a shared-scope storm on channel 100.
    ///
    /// Limits: messages 5 per 500 ms fixed per channel (`PATCH` message has the same hash and its own
    /// counter); reactions one counter for every reaction route, leaky 5 per 125 ms per channel; role
    /// add/remove 10 per 1 s fixed per guild; global 50 per 200 ms; latency 5–15 ms; every 7th message to
    /// channel 100 starts a 100 ms shared storm; ban after 200 invalid requests within 10 s, for 10 s.
    ///
    /// ```
    /// let s = discord_sim::Scenario::mixed();
    /// assert_eq!(s.operations.len(), 312);
    /// assert!(s.lower_bound() >= std::time::Duration::from_millis(1000));
    /// ```
    pub fn mixed() -> Self {
        let config = SimConfig::empty()
            .route(
                RouteConfig::new(
                    Method::POST,
                    "/channels/{channel_id}/messages",
                    HASH_MESSAGES,
                    Limit::fixed(5, ms(500)),
                )
                .shared_storm(
                    StormTrigger::EveryNth(7),
                    ms(100),
                    Some(&["channels/100"]),
                ),
            )
            .route(RouteConfig::new(
                Method::PATCH,
                "/channels/{channel_id}/messages/{message_id}",
                HASH_MESSAGES,
                Limit::fixed(5, ms(500)),
            ))
            .route(reaction(
                Method::PUT,
                "/{emoji}/@me",
                Limit::leaky(5, ms(125)),
            ))
            .route(reaction(
                Method::DELETE,
                "/{emoji}/@me",
                Limit::leaky(5, ms(125)),
            ))
            .route(reaction(
                Method::DELETE,
                "/{emoji}/{user_id}",
                Limit::leaky(5, ms(125)),
            ))
            .route(reaction(Method::DELETE, "", Limit::leaky(5, ms(125))))
            .route(role(Method::PUT, Limit::fixed(10, ms(1000))))
            .route(role(Method::DELETE, Limit::fixed(10, ms(1000))))
            .global(50, ms(200))
            .ban(200, ms(10_000), ms(10_000))
            .latency(Latency::Range(ms(5), ms(15)))
            .seed(7);
        let mut operations = Vec::with_capacity(312);
        for i in 0..200u32 {
            let c = 100 + i % 10;
            operations.push(Operation::new(
                Method::POST,
                format!("/channels/{c}/messages"),
                Some(format!(r#"{{"content": "message {i}"}}"#)),
            ));
        }
        const EMOJI: [&str; 4] = [
            "%F0%9F%91%8D",
            "%E2%9D%A4%EF%B8%8F",
            "%F0%9F%8E%89",
            "%F0%9F%98%80",
        ];
        for i in 0..100u32 {
            let c = 100 + i % 10;
            let e = EMOJI[(i / 10) as usize % EMOJI.len()];
            operations.push(Operation::new(
                Method::PUT,
                format!("/channels/{c}/messages/{}/reactions/{e}/@me", 9000 + c),
                None,
            ));
        }
        for u in 0..12u32 {
            operations.push(Operation::new(
                Method::PUT,
                format!("/guilds/500/members/{}/roles/600", 7000 + u),
                None,
            ));
        }
        Self {
            name: "mixed",
            description: "312 operations at once: 200 messages over 10 channels, 100 reactions, 12 role adds, \
                          a shared-scope storm (time scaled 1/10)",
            config,
            operations,
        }
    }

    /// The issue's second run, built to reward parallelism: three webhook buckets of 40 requests per
    /// second (fixed windows, per webhook, exempt from the global limit), latency 80–120 ms, 306 operations
    /// (102 per webhook) at once. One request in flight per bucket reaches about 10 per second per bucket.
    pub fn parallel() -> Self {
        let config = SimConfig::empty()
            .route(RouteConfig::new(
                Method::POST,
                "/webhooks/{webhook_id}/{webhook_token}",
                HASH_WEBHOOK,
                Limit::fixed(40, ms(1000)),
            ))
            .latency(Latency::Range(ms(80), ms(120)))
            .seed(11);
        let mut operations = Vec::with_capacity(306);
        for i in 0..306u32 {
            let w = 800 + i % 3;
            let mut op = Operation::new(
                Method::POST,
                format!("/webhooks/{w}/token-{w}"),
                Some(format!(r#"{{"content": "webhook message {i}"}}"#)),
            );
            op.authorized = false;
            operations.push(op);
        }
        Self {
            name: "parallel",
            description:
                "306 webhook executions at once over three buckets of 40/s, latency 80-120 ms",
            config,
            operations,
        }
    }

    /// [`Scenario::parallel`] on leaky buckets: each webhook bucket holds 40 and drains one request every
    /// 25 ms, so `X-RateLimit-Remaining` is the room left in the bucket and `X-RateLimit-Reset-After` the
    /// time until it has drained completely (it grows with every request and never names a fixed reset).
    /// 306 operations (102 per webhook) at once, latency 80–120 ms. The first 40 per bucket go at once;
    /// the other 62 can go no faster than the drain, one per 25 ms.
    pub fn parallel_leaky() -> Self {
        let mut scenario = Self::parallel();
        scenario.config = SimConfig::empty()
            .route(RouteConfig::new(
                Method::POST,
                "/webhooks/{webhook_id}/{webhook_token}",
                HASH_WEBHOOK,
                Limit::leaky(40, ms(1000)),
            ))
            .latency(Latency::Range(ms(80), ms(120)))
            .seed(13);
        scenario.name = "parallel-leaky";
        scenario.description =
            "306 webhook executions at once over three leaky buckets of 40 draining one per 25 ms, \
             latency 80-120 ms";
        scenario
    }

    /// A hidden sub-limit (dapi#1900): `PATCH /channels/{channel_id}` reports 10 per 1.5 s, while renames
    /// (`name` or `topic` in the body) are also limited to 2 per 600 ms per channel. Six renames and four
    /// other edits of channel 100. The first sub-limit 429 cannot be predicted from the headers.
    pub fn sublimit() -> Self {
        let config = SimConfig::empty()
            .route(
                RouteConfig::new(
                    Method::PATCH,
                    "/channels/{channel_id}",
                    HASH_CHANNEL_EDIT,
                    Limit::fixed(10, ms(1500)),
                )
                .sub_limit(Limit::fixed(2, ms(600)), &["name", "topic"]),
            )
            .latency(Latency::Range(ms(2), ms(6)))
            .seed(3);
        let mut operations = Vec::new();
        for i in 0..10u32 {
            let body = if i % 5 < 3 {
                format!(r#"{{"name": "renamed-{i}"}}"#)
            } else {
                format!(r#"{{"nsfw": {}}}"#, i % 2 == 0)
            };
            operations.push(Operation::new(Method::PATCH, "/channels/100", Some(body)));
        }
        Self {
            name: "sublimit",
            description:
                "6 channel renames (hidden sub-limit 2 per 600 ms) and 4 other edits of one channel",
            config,
            operations,
        }
    }

    /// Layered limits (dapi#5646): `POST /channels/{channel_id}/messages` reports a 50,000-request bucket
    /// with a day-long reset while a hidden per-channel 5 per 500 ms limit applies; its 429 carries the
    /// hidden limit's hash and numbers. Ten messages to each of channels 100 and 101.
    pub fn layered() -> Self {
        let config = SimConfig::empty()
            .route(
                RouteConfig::new(
                    Method::POST,
                    "/channels/{channel_id}/messages",
                    HASH_LAYER_BIG,
                    Limit::fixed(50_000, Duration::from_secs(102_737)),
                )
                .layer(HASH_LAYER_SMALL, Limit::fixed(5, ms(500)), true),
            )
            .latency(Latency::Range(ms(2), ms(6)))
            .seed(5);
        let operations = (0..20u32)
            .map(|i| {
                Operation::new(
                    Method::POST,
                    format!("/channels/{}/messages", 100 + i % 2),
                    Some(format!(r#"{{"content": "layered {i}"}}"#)),
                )
            })
            .collect();
        Self {
            name: "layered",
            description:
                "20 messages under a reported 50,000/day bucket hiding a 5 per 500 ms limit",
            config,
            operations,
        }
    }

    /// Every scenario above.
    pub fn all() -> Vec<Self> {
        vec![
            Self::mixed(),
            Self::parallel(),
            Self::parallel_leaky(),
            Self::sublimit(),
            Self::layered(),
        ]
    }

    /// The scenario with this name.
    pub fn by_name(name: &str) -> Option<Self> {
        Self::all().into_iter().find(|s| s.name == name)
    }

    /// The earliest any client can finish: for every counter (route buckets, layers, sub-limits and the
    /// global limit), the shortest span in which it admits the operations that count against it, plus
    /// the smallest latency (the last response still has to come back). Shared storms are not included.
    pub fn lower_bound(&self) -> Duration {
        self.bound(false, false)
    }

    /// [`Scenario::lower_bound`], also counting what shared storms started every n-th request
    /// ([`StormTrigger::EveryNth`](crate::StormTrigger::EveryNth)) cost on fixed windows, which no client
    /// can avoid: the j-th storm starts at the request that would be the `j·(n−1)+1`-th admission of that
    /// route and major (each earlier storm's first request was refused, not counted), no earlier than the
    /// window that admission belongs to opens; it and every later request of that counter must then wait
    /// out the storm. So the counter cannot finish before that window opens, plus the storm, plus the
    /// smallest latency. Storms also take global slots (the global limit is checked first), so each adds
    /// one request to the global count. And fixed windows meet the global limit: for every moment `t` at
    /// which some fixed window can open at the earliest (its index × its period), the requests of all
    /// windows that cannot open before `t` (storm refusals included) must pass the global limit from `t`
    /// on, which takes `⌈D ÷ N⌉ − 1` further global periods for D of them. Storms drawn at random are left
    /// out.
    pub fn lower_bound_with_storms(&self) -> Duration {
        self.bound(false, true)
    }

    /// [`Scenario::lower_bound`] for a client that learns each fixed window's reset from a response
    /// (`Reset-After` on a monotonic clock, as the notes prescribe): every further fixed window opens at
    /// least one minimum round trip after the previous one ended, because the first request of the new
    /// window leaves only once the reset is known and still has to travel.
    pub fn lower_bound_reactive(&self) -> Duration {
        self.bound(true, false)
    }

    fn bound(&self, reactive: bool, storms: bool) -> Duration {
        let templates: Vec<Template> = self
            .config
            .routes
            .iter()
            .map(|r| Template::parse(&r.template))
            .collect();
        let mut counts: HashMap<String, (Limit, u64, bool)> = HashMap::new();
        // Per route and major with an every-n-th storm: (storm, its route's reported limit, requests).
        let mut stormy: HashMap<String, (SharedStorm, Limit, u64)> = HashMap::new();
        // Reported counters of requests under the global limit: (limit, requests, every-n-th storm).
        let mut bursts: HashMap<String, (Limit, u64, Option<u64>)> = HashMap::new();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i128);
        for op in &self.operations {
            let Some(route) = match_route(&self.config.routes, &templates, &op.method, &op.path)
            else {
                continue;
            };
            let source = if op.authorized { "token" } else { "ip" };
            if let (true, Some(storm), Some(limit)) = (storms, &route.shared, route.limit) {
                let major = crate::route::major_of(&op.path);
                if storm.majors.as_ref().is_none_or(|ms| ms.contains(&major)) {
                    stormy
                        .entry(format!(
                            "{source}|{} {}|{major}",
                            route.method, route.template
                        ))
                        .or_insert((storm.clone(), limit, 0))
                        .2 += 1;
                }
            }
            for (i, (name, _, major, limit)) in Engine::counter_names(route, &op.path, now_ms)
                .into_iter()
                .enumerate()
            {
                let key = format!("{source}|{name}|{major}");
                if storms && i == 0 && self.config.global.is_some() && !route.exempt_global {
                    let every = route.shared.as_ref().and_then(|st| match st.trigger {
                        StormTrigger::EveryNth(e)
                            if e >= 2
                                && st.majors.as_ref().is_none_or(|ms| ms.contains(&major)) =>
                        {
                            Some(u64::from(e))
                        }
                        _ => None,
                    });
                    bursts.entry(key.clone()).or_insert((limit, 0, every)).1 += 1;
                }
                counts.entry(key).or_insert((limit, 0, true)).1 += 1;
            }
            if let Some(sub) = &route.sub_limit {
                if sub_limit_applies(
                    op.body.as_deref().unwrap_or("").as_bytes(),
                    &sub.body_fields,
                ) {
                    let major = crate::route::major_of(&op.path);
                    let key = format!("{source}|sub:{} {}|{major}", route.method, route.template);
                    counts.entry(key).or_insert((sub.limit, 0, true)).1 += 1;
                }
            }
            if let (Some(g), false) = (self.config.global, route.exempt_global) {
                // A sliding log the client can keep itself: no round trip per window.
                counts
                    .entry(format!("{source}|global"))
                    .or_insert((g.as_limit(), 0, false))
                    .1 += 1;
            }
        }
        let mut storm_floor = Duration::ZERO;
        for (key, (storm, limit, n)) in &stormy {
            let (StormTrigger::EveryNth(every), Window::Fixed) = (storm.trigger, limit.window)
            else {
                continue;
            };
            if every < 2 {
                continue;
            }
            let every = u64::from(every);
            // Storms j = 1.. start at admission attempt j·(every−1)+1, while that admission is still needed.
            let last = (1..)
                .map(|j| j * (every - 1) + 1)
                .take_while(|a| a <= n)
                .last();
            let Some(a) = last else { continue };
            let windows_before = a.div_ceil(limit.limit_u64()) - 1;
            let floor =
                limit.period * u32::try_from(windows_before).unwrap_or(u32::MAX) + storm.duration;
            storm_floor = storm_floor.max(floor);
            let storms_started = (1..).take_while(|j| j * (every - 1) < *n).count() as u64;
            let source = key.split('|').next().unwrap_or("token");
            if let Some(g) = counts.get_mut(&format!("{source}|global")) {
                g.1 += storms_started;
            }
        }
        // Fixed windows meet the global limit: the requests of every window that opens at `t` or later must
        // be sent at `t` or later (a window opens no earlier than its index × period), storm refusals
        // included, and a sliding log of N per G takes ⌈D ÷ N⌉ − 1 further periods to pass D of them.
        if let Some(g) = self.config.global.filter(|_| storms) {
            let mut demand: Vec<(Duration, u64)> = Vec::new();
            for (limit, n, every) in bursts.values() {
                if limit.window != Window::Fixed || *n == 0 {
                    continue;
                }
                let l = limit.limit_u64();
                let k = n.div_ceil(l);
                let at = |w: u64| limit.period * u32::try_from(w).unwrap_or(u32::MAX);
                for w in 0..k {
                    demand.push((at(w), if w + 1 < k { l } else { n - (k - 1) * l }));
                }
                if let Some(e) = every {
                    for a in (1..).map(|j| j * (e - 1) + 1).take_while(|a| a <= n) {
                        demand.push((at(a.div_ceil(l) - 1), 1));
                    }
                }
            }
            let per = u64::from(g.limit.max(1));
            for &(t, _) in demand.iter().filter(|(t, _)| !t.is_zero()) {
                let d: u64 = demand.iter().filter(|(u, _)| *u >= t).map(|x| x.1).sum();
                let blocks = u32::try_from(d.div_ceil(per).saturating_sub(1)).unwrap_or(u32::MAX);
                storm_floor = storm_floor.max(t + g.period * blocks);
            }
        }
        let rtt = self.config.latency.min();
        let slowest = counts
            .values()
            .map(|(limit, n, learned)| {
                let mut d = limit.min_duration(*n);
                if reactive && *learned && limit.window == crate::config::Window::Fixed {
                    let windows = n.div_ceil(limit.limit_u64());
                    d += rtt * u32::try_from(windows.saturating_sub(1)).unwrap_or(u32::MAX);
                }
                d
            })
            .max()
            .unwrap_or_default()
            .max(storm_floor);
        slowest + rtt
    }
}

impl SimConfig {
    /// [`Scenario::mixed`]'s configuration.
    pub fn scenario_mixed() -> Self {
        Scenario::mixed().config
    }

    /// [`Scenario::parallel`]'s configuration.
    pub fn scenario_parallel() -> Self {
        Scenario::parallel().config
    }

    /// [`Scenario::parallel_leaky`]'s configuration.
    pub fn scenario_parallel_leaky() -> Self {
        Scenario::parallel_leaky().config
    }

    /// [`Scenario::sublimit`]'s configuration.
    pub fn scenario_sublimit() -> Self {
        Scenario::sublimit().config
    }

    /// [`Scenario::layered`]'s configuration.
    pub fn scenario_layered() -> Self {
        Scenario::layered().config
    }
}

/// Discord's observed route table (notes A.9) at real timings, added to `config`.
pub(crate) fn discord_routes(config: SimConfig) -> SimConfig {
    let s = Duration::from_secs;
    config
        .route(RouteConfig::new(
            Method::POST,
            "/channels/{channel_id}/messages",
            HASH_MESSAGES,
            Limit::fixed(5, s(5)),
        ))
        .route(RouteConfig::new(
            Method::PATCH,
            "/channels/{channel_id}/messages/{message_id}",
            HASH_MESSAGES,
            Limit::fixed(5, s(5)),
        ))
        .route(RouteConfig::unlimited(
            Method::GET,
            "/channels/{channel_id}/messages",
        ))
        .route(
            RouteConfig::new(
                Method::DELETE,
                "/channels/{channel_id}/messages/{message_id}",
                HASH_DELETE,
                Limit::fixed(5, s(1)),
            )
            .by_snowflake_age("message_id", delete_tiers(s(1), ms(333), s(4)))
            .status(StatusCode::NO_CONTENT),
        )
        .route(RouteConfig::new(
            Method::POST,
            "/channels/{channel_id}/messages/bulk-delete",
            "0c3f8d1e2a4b5c6d7e8f9a0b1c2d3e4f",
            Limit::fixed(1, s(1)),
        ))
        .route(reaction(
            Method::PUT,
            "/{emoji}/@me",
            Limit::fixed(1, ms(250)),
        ))
        .route(reaction(
            Method::DELETE,
            "/{emoji}/@me",
            Limit::fixed(1, ms(250)),
        ))
        .route(reaction(
            Method::DELETE,
            "/{emoji}/{user_id}",
            Limit::fixed(1, ms(250)),
        ))
        .route(reaction(
            Method::DELETE,
            "/{emoji}",
            Limit::fixed(1, ms(250)),
        ))
        .route(reaction(Method::DELETE, "", Limit::fixed(1, ms(250))))
        .route(
            RouteConfig::new(
                Method::PATCH,
                "/channels/{channel_id}",
                HASH_CHANNEL_EDIT,
                Limit::fixed(10, s(15)),
            )
            .sub_limit(Limit::fixed(2, s(600)), &["name", "topic"]),
        )
        .route(RouteConfig::new(
            Method::GET,
            "/gateway/bot",
            "2b3c4d5e6f708192a3b4c5d6e7f80912",
            Limit::fixed(2, s(5)),
        ))
        .route(RouteConfig::new(
            Method::POST,
            "/webhooks/{webhook_id}/{webhook_token}",
            HASH_WEBHOOK,
            Limit::fixed(5, s(1)),
        ))
        .route(role(Method::PUT, Limit::fixed(10, s(10))))
        .route(role(Method::DELETE, Limit::fixed(10, s(10))))
        .route(RouteConfig::new(
            Method::PATCH,
            "/guilds/{guild_id}/members/{user_id}",
            "7e8f9a0b1c2d3e4f5a6b7c8d9e0f1a2b",
            Limit::fixed(10, s(10)),
        ))
        .route(
            RouteConfig::new(
                Method::DELETE,
                "/guilds/{guild_id}/members/{user_id}",
                "3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f",
                Limit::fixed(5, s(1)),
            )
            .status(StatusCode::NO_CONTENT),
        )
        .route(
            RouteConfig::unlimited(
                Method::POST,
                "/interactions/{interaction_id}/{interaction_token}/callback",
            )
            .status(StatusCode::NO_CONTENT),
        )
}

/// Message deletion by age (dapi#8330): younger than 10 s → [`HASH_DELETE`] 5 per `young`; up to 14 days
/// → [`HASH_DELETE_RECENT`] 3 per `recent`; older → [`HASH_DELETE_OLD`] 30 per `old`.
pub(crate) fn delete_tiers(young: Duration, recent: Duration, old: Duration) -> Vec<AgeTier> {
    vec![
        AgeTier {
            younger_than: Some(Duration::from_secs(10)),
            hash: HASH_DELETE.to_owned(),
            limit: Limit::fixed(5, young),
        },
        AgeTier {
            younger_than: Some(Duration::from_secs(14 * 24 * 3600)),
            hash: HASH_DELETE_RECENT.to_owned(),
            limit: Limit::fixed(3, recent),
        },
        AgeTier {
            younger_than: None,
            hash: HASH_DELETE_OLD.to_owned(),
            limit: Limit::fixed(30, old),
        },
    ]
}

fn reaction(method: Method, tail: &str, limit: Limit) -> RouteConfig {
    RouteConfig::new(
        method,
        format!("{REACTION_BASE}{tail}"),
        HASH_REACTIONS,
        limit,
    )
    .shared_counter()
    .status(StatusCode::NO_CONTENT)
}

fn role(method: Method, limit: Limit) -> RouteConfig {
    RouteConfig::new(
        method,
        "/guilds/{guild_id}/members/{user_id}/roles/{role_id}",
        HASH_ROLES,
        limit,
    )
    .shared_counter()
    .status(StatusCode::NO_CONTENT)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_sizes_and_bounds() {
        let m = Scenario::mixed();
        assert_eq!(m.operations.len(), 312);
        // 20 messages per channel at 5 per 500 ms fixed: 3 more windows.
        assert_eq!(m.lower_bound(), ms(1500) + ms(5));
        // Channel 100's third storm starts at its 19th admission, in its fourth window (3 × 500 + 100 ms);
        // and the ten channels' fourth windows (five messages each, plus that refused request) are 51 requests
        // from 1.5 s on, one more than the global 50 per 200 ms passes in one period.
        assert_eq!(m.lower_bound_with_storms(), ms(1700) + ms(5));
        assert_eq!(
            Scenario::parallel().lower_bound_with_storms(),
            Scenario::parallel().lower_bound()
        );
        let p = Scenario::parallel();
        assert_eq!(p.operations.len(), 306);
        assert_eq!(p.lower_bound(), ms(2000) + ms(80));
        assert_eq!(p.lower_bound_reactive(), ms(2000) + 3 * ms(80));
        // 6 renames at 2 per 600 ms.
        assert_eq!(Scenario::sublimit().lower_bound(), ms(1200) + ms(2));
        // 10 per channel at 5 per 500 ms.
        assert_eq!(Scenario::layered().lower_bound(), ms(500) + ms(2));
    }

    #[test]
    fn default_table_matches_reactions_to_one_counter() {
        let c = SimConfig::default();
        let templates: Vec<Template> = c
            .routes
            .iter()
            .map(|r| Template::parse(&r.template))
            .collect();
        let put = match_route(
            &c.routes,
            &templates,
            &Method::PUT,
            "/channels/1/messages/2/reactions/x/@me",
        )
        .unwrap();
        let del = match_route(
            &c.routes,
            &templates,
            &Method::DELETE,
            "/channels/1/messages/2/reactions/x/5",
        )
        .unwrap();
        let p = Engine::counter_names(put, "/channels/1/messages/2/reactions/x/@me", 0);
        let d = Engine::counter_names(del, "/channels/1/messages/2/reactions/x/5", 0);
        assert_eq!(p[0].0, d[0].0);
        let bulk = match_route(
            &c.routes,
            &templates,
            &Method::POST,
            "/channels/1/messages/bulk-delete",
        )
        .unwrap();
        assert_eq!(bulk.template, "/channels/{channel_id}/messages/bulk-delete");
    }
}
