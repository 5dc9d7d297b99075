//! The simulator's decisions, independent of HTTP: `(request, now) → reply`, with time as integer
//! microseconds since the simulator started. One mutex guards all state; a simulator needs exactness, not
//! throughput.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{Method, StatusCode};
use parking_lot::Mutex;

use crate::config::{
    CounterMode, HeaderFault, Latency, Limit, RouteConfig, SimConfig, StormTrigger, Window,
};
use crate::rng::SplitMix64;
use crate::route::{major_of, Template};
use crate::stats::{BucketStats, SimStats};

/// One request as the engine sees it.
pub(crate) struct SimRequest<'a> {
    pub(crate) method: &'a Method,
    /// The path under the API base, for example `/channels/1/messages`.
    pub(crate) path: &'a str,
    /// The raw `Authorization` header, if any.
    pub(crate) authorization: Option<&'a str>,
    pub(crate) ip: IpAddr,
    pub(crate) body: &'a [u8],
    /// The round-trip latency drawn for this request (half before the decision, half after).
    pub(crate) latency: Duration,
}

/// The body of a reply.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ReplyBody {
    Empty,
    Json(String),
    Html(String),
}

/// A reply: status, headers in order, body.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: Vec<(&'static str, String)>,
    pub(crate) body: ReplyBody,
}

/// The state of one counter's window.
#[derive(Clone, Copy, Debug)]
enum WindowState {
    Fixed { start: Option<u64>, count: u64 },
    Leaky { tat: u64 },
}

impl WindowState {
    fn new(limit: &Limit) -> Self {
        match limit.window {
            Window::Fixed => WindowState::Fixed {
                start: None,
                count: 0,
            },
            Window::Leaky => WindowState::Leaky { tat: 0 },
        }
    }
}

/// What a counter would say about one more request at `now`.
#[derive(Clone, Copy, Debug)]
struct Eval {
    allowed: bool,
    /// After admission if allowed; the current value (0) otherwise.
    remaining: u64,
    reset_after: u64,
    /// Until one more request would be admitted (0 when allowed).
    retry_after: u64,
}

fn evaluate(limit: &Limit, ws: &WindowState, now: u64) -> Eval {
    let l = limit.limit_u64();
    match *ws {
        WindowState::Fixed { start, count } => {
            let p = limit.period_us();
            match start.filter(|s| now < s.saturating_add(p)) {
                Some(s) => {
                    let reset_after = s + p - now;
                    if count < l {
                        Eval {
                            allowed: true,
                            remaining: l - count - 1,
                            reset_after,
                            retry_after: 0,
                        }
                    } else {
                        Eval {
                            allowed: false,
                            remaining: 0,
                            reset_after,
                            retry_after: reset_after,
                        }
                    }
                }
                None => Eval {
                    allowed: true,
                    remaining: l - 1,
                    reset_after: p,
                    retry_after: 0,
                },
            }
        }
        WindowState::Leaky { tat } => {
            let t = limit.interval_us();
            let cap = l.saturating_mul(t);
            let tat0 = tat.max(now);
            let new_tat = tat0 + t;
            if new_tat - now <= cap {
                Eval {
                    allowed: true,
                    remaining: (cap - (new_tat - now)) / t,
                    reset_after: new_tat - now,
                    retry_after: 0,
                }
            } else {
                Eval {
                    allowed: false,
                    remaining: 0,
                    reset_after: tat0 - now,
                    retry_after: new_tat - now - cap,
                }
            }
        }
    }
}

fn commit(limit: &Limit, ws: &mut WindowState, now: u64) {
    match ws {
        WindowState::Fixed { start, count } => {
            if start.is_some_and(|s| now < s.saturating_add(limit.period_us())) {
                *count += 1;
            } else {
                *start = Some(now);
                *count = 1;
            }
        }
        WindowState::Leaky { tat } => {
            *tat = (*tat).max(now) + limit.interval_us();
        }
    }
}

/// `(remaining, reset_after)` now, without counting anything.
fn peek(limit: &Limit, ws: &WindowState, now: u64) -> (u64, u64) {
    let l = limit.limit_u64();
    match *ws {
        WindowState::Fixed { start, count } => {
            let p = limit.period_us();
            match start.filter(|s| now < s.saturating_add(p)) {
                Some(s) => (l.saturating_sub(count), s + p - now),
                None => (l, p),
            }
        }
        WindowState::Leaky { tat } => {
            let t = limit.interval_us();
            let busy = tat.max(now) - now;
            ((l.saturating_mul(t).saturating_sub(busy)) / t, busy)
        }
    }
}

/// A counter and its record.
#[derive(Debug)]
struct Counter {
    limit: Limit,
    ws: WindowState,
    stats: BucketStats,
}

impl Counter {
    fn new(limit: Limit, source: &str, name: String, hash: &str, major: &str) -> Self {
        Self {
            limit,
            ws: WindowState::new(&limit),
            stats: BucketStats {
                source: source.to_owned(),
                name,
                hash: hash.to_owned(),
                major: major.to_owned(),
                limit,
                admitted: Vec::new(),
                latencies: Vec::new(),
                windows: Vec::new(),
                rejected: 0,
                rejected_early_by: Vec::new(),
            },
        }
    }
}

#[derive(Debug, Default)]
struct Storm {
    seen: u64,
    until: u64,
}

#[derive(Debug)]
struct State {
    rng: SplitMix64,
    counters: HashMap<String, Counter>,
    /// Sub-limit windows, keyed like counters (no stats of their own).
    subs: HashMap<String, WindowState>,
    global: HashMap<String, (VecDeque<u64>, Counter)>,
    invalid: HashMap<IpAddr, VecDeque<u64>>,
    banned_until: HashMap<IpAddr, u64>,
    storms: HashMap<String, Storm>,
    revoked: HashSet<String>,
    /// Responses per route with alternate hashes, to rotate them.
    rotations: HashMap<String, u64>,
    stats: SimStats,
    next_id: u64,
}

/// The simulator's engine: config, compiled routes and state.
#[derive(Debug)]
pub(crate) struct Engine {
    config: SimConfig,
    templates: Vec<Template>,
    start: tokio::time::Instant,
    /// Unix time of `start`, in microseconds, for `X-RateLimit-Reset`.
    epoch_start_us: i128,
    state: Mutex<State>,
}

const MSG_USER: &str = "You are being rate limited.";
const MSG_SHARED: &str = "The resource is being rate limited.";
const BAN_HTML: &str = "<!DOCTYPE html>\n<html><head><title>Access denied | discord.com used Cloudflare to restrict access</title></head>\n<body><h1>Error 1015</h1><h2>You are being rate limited</h2><p>The owner of this website (discord.com) has banned you temporarily from accessing this website.</p></body></html>\n";
const BAN_JSON: &str = r#"{"message":"You are being blocked from accessing our API temporarily due to exceeding our rate limits frequently. Please read our docs at https://discord.com/developers/docs/topics/rate-limits to prevent this moving forward.","code":0}"#;

impl Engine {
    pub(crate) fn new(config: SimConfig) -> Self {
        let templates = config
            .routes
            .iter()
            .map(|r| Template::parse(&r.template))
            .collect();
        let epoch_start_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as i128)
            .unwrap_or(0);
        let state = State {
            rng: SplitMix64::new(config.seed),
            counters: HashMap::new(),
            subs: HashMap::new(),
            global: HashMap::new(),
            invalid: HashMap::new(),
            banned_until: HashMap::new(),
            storms: HashMap::new(),
            revoked: HashSet::new(),
            rotations: HashMap::new(),
            stats: SimStats::default(),
            next_id: 1,
        };
        Self {
            config,
            templates,
            start: tokio::time::Instant::now(),
            epoch_start_us,
            state: Mutex::new(state),
        }
    }

    pub(crate) fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Microseconds since the start, on tokio's clock (so a paused test clock drives it).
    pub(crate) fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Unix time in milliseconds at `now`.
    fn unix_ms(&self, now: u64) -> i128 {
        (self.epoch_start_us + i128::from(now)).div_euclid(1000)
    }

    /// Draws this request's latency from the seeded RNG.
    pub(crate) fn draw_latency(&self) -> Duration {
        match self.config.latency {
            Latency::None => Duration::ZERO,
            Latency::Fixed(d) => d,
            Latency::Range(a, b) => {
                let (lo, hi) = (a.min(b), a.max(b));
                let lo_us = u64::try_from(lo.as_micros()).unwrap_or(u64::MAX);
                let hi_us = u64::try_from(hi.as_micros()).unwrap_or(u64::MAX);
                Duration::from_micros(self.state.lock().rng.range(lo_us, hi_us))
            }
        }
    }

    /// The route a path matches: the most literal segments win, then table order.
    pub(crate) fn route_for(&self, method: &Method, path: &str) -> Option<&RouteConfig> {
        match_route(&self.config.routes, &self.templates, method, path)
    }

    /// The counter names a request to `path` on `route` counts against, as `(name, hash, major, limit)`:
    /// the reported limit first, then each layer.
    pub(crate) fn counter_names(
        route: &RouteConfig,
        path: &str,
        now_unix_ms: i128,
    ) -> Vec<(String, String, String, Limit)> {
        let major = major_of(path);
        let mut out = Vec::new();
        let m = if route.per_major {
            major.clone()
        } else {
            String::new()
        };
        if let Some(tier) = age_tier(route, path, now_unix_ms) {
            out.push((
                format!("hash:{}", tier.hash),
                tier.hash.clone(),
                m,
                tier.limit,
            ));
        } else if let Some(limit) = route.limit {
            let name = match route.counter {
                CounterMode::SharedByHash => format!("hash:{}", route.hash),
                CounterMode::PerRoute => format!("route:{} {}", route.method, route.template),
            };
            out.push((name, route.hash.clone(), m, limit));
        }
        for layer in &route.layers {
            let m = if layer.per_major {
                major.clone()
            } else {
                String::new()
            };
            out.push((
                format!("layer:{}", layer.hash),
                layer.hash.clone(),
                m,
                layer.limit,
            ));
        }
        out
    }

    pub(crate) fn stats(&self) -> SimStats {
        let now = self.now();
        let st = self.state.lock();
        let mut stats = st.stats.clone();
        stats.elapsed = Duration::from_micros(now);
        stats.banned = st.banned_until.values().any(|&u| u > now);
        stats.buckets = st.counters.values().map(|c| c.stats.clone()).collect();
        stats
            .buckets
            .sort_by(|a, b| (&a.source, &a.name, &a.major).cmp(&(&b.source, &b.name, &b.major)));
        stats.global = st.global.values().map(|(_, c)| c.stats.clone()).collect();
        stats.global.sort_by(|a, b| a.source.cmp(&b.source));
        stats
    }

    /// Forgets counts and records (not the windows' state, not bans, not revoked tokens).
    pub(crate) fn reset_stats(&self) {
        let mut st = self.state.lock();
        st.stats = SimStats::default();
        for c in st.counters.values_mut() {
            c.stats.admitted.clear();
            c.stats.latencies.clear();
            c.stats.windows.clear();
            c.stats.rejected = 0;
            c.stats.rejected_early_by.clear();
        }
        for (_, c) in st.global.values_mut() {
            c.stats.admitted.clear();
            c.stats.rejected = 0;
            c.stats.rejected_early_by.clear();
        }
    }

    pub(crate) fn revoke_token(&self, token: &str) {
        self.state.lock().revoked.insert(token.to_owned());
    }

    pub(crate) fn unban_all(&self) {
        let mut st = self.state.lock();
        st.banned_until.clear();
        st.invalid.clear();
    }

    /// Decides one request at `now`, then corrupts the answer if the route says so.
    pub(crate) fn handle(&self, req: &SimRequest<'_>, now: u64) -> Reply {
        let mut reply = self.decide(req, now);
        if let Some(fault) = self
            .route_for(req.method, req.path)
            .and_then(|r| r.header_fault)
        {
            corrupt(&mut reply, fault);
        }
        reply
    }

    fn decide(&self, req: &SimRequest<'_>, now: u64) -> Reply {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        st.stats.requests += 1;
        let at = Duration::from_micros(now);
        st.stats.first_request.get_or_insert(at);
        st.stats.last_request = Some(at);

        // 1. A banned IP gets Cloudflare's page for everything (A.5, A.7).
        if st.banned_until.get(&req.ip).is_some_and(|&u| u > now) {
            st.stats.cloudflare_429 += 1;
            return self.ban_reply();
        }

        let route = self.route_for(req.method, req.path);

        // 2. Authentication.
        let token = req.authorization.and_then(parse_token);
        let source = match (req.authorization, token) {
            (Some(_), Some(t))
                if self.config.tokens.iter().any(|k| k == t) && !st.revoked.contains(t) =>
            {
                t.to_owned()
            }
            (None, None) if route.is_some_and(|r| !r.requires_auth) => format!("ip:{}", req.ip),
            _ => {
                st.stats.unauthorized += 1;
                self.count_invalid(st, req.ip, now);
                return json_reply(
                    StatusCode::UNAUTHORIZED,
                    r#"{"message": "401: Unauthorized", "code": 0}"#,
                );
            }
        };

        let Some(route) = route else {
            st.stats.not_found += 1;
            return json_reply(
                StatusCode::NOT_FOUND,
                r#"{"message": "404: Not Found", "code": 0}"#,
            );
        };

        // 3. The global limit, before the route's (A.11.3).
        if let (Some(g), false) = (self.config.global, route.exempt_global) {
            let p = u64::try_from(g.period.as_micros())
                .unwrap_or(u64::MAX)
                .max(1);
            let limited = {
                let (log, counter) = st.global.entry(source.clone()).or_insert_with(|| {
                    (
                        VecDeque::new(),
                        Counter::new(g.as_limit(), &source, "global".to_owned(), "", ""),
                    )
                });
                while log.front().is_some_and(|&t| t.saturating_add(p) <= now) {
                    log.pop_front();
                }
                if log.len() >= g.limit as usize {
                    let retry = log.front().map_or(p, |&t| t + p - now);
                    counter.stats.rejected += 1;
                    counter
                        .stats
                        .rejected_early_by
                        .push(Duration::from_micros(retry));
                    Some(retry)
                } else {
                    log.push_back(now);
                    counter.stats.admitted.push(at);
                    None
                }
            };
            if let Some(retry) = limited {
                st.stats.global_429 += 1;
                self.count_invalid(st, req.ip, now);
                let headers = vec![
                    ("retry-after", retry_after_header(retry)),
                    ("x-ratelimit-global", "true".to_owned()),
                    ("x-ratelimit-scope", "global".to_owned()),
                    ("via", "1.1 google".to_owned()),
                    ("content-type", "application/json".to_owned()),
                ];
                return Reply {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    headers,
                    body: ReplyBody::Json(limited_body(MSG_USER, retry, true, 0)),
                };
            }
        }

        // 4. The route's counters: the reported limit, then hidden layers. All must admit.
        let names = Self::counter_names(route, req.path, self.unix_ms(now));
        let keys: Vec<String> = names
            .iter()
            .map(|(n, _, m, _)| format!("{source}|{n}|{m}"))
            .collect();
        let mut evals = Vec::with_capacity(names.len());
        for ((name, hash, major, limit), key) in names.iter().zip(&keys) {
            let e = {
                let c = st
                    .counters
                    .entry(key.clone())
                    .or_insert_with(|| Counter::new(*limit, &source, name.clone(), hash, major));
                let e = evaluate(&c.limit, &c.ws, now);
                if !e.allowed {
                    c.stats.rejected += 1;
                    c.stats
                        .rejected_early_by
                        .push(Duration::from_micros(e.retry_after));
                }
                e
            };
            if !e.allowed {
                st.stats.user_429 += 1;
                self.count_invalid(st, req.ip, now);
                let mut headers = Vec::new();
                self.bucket_headers(&mut headers, limit, hash, 0, e.reset_after, now);
                return self.limited(headers, "user", e.retry_after, MSG_USER, 0);
            }
            evals.push(e);
        }

        // 5. A hidden sub-limit: 429 with the main headers untouched (`Remaining > 0`).
        let major = major_of(req.path);
        let sub_key = route
            .sub_limit
            .as_ref()
            .filter(|s| body_has_field(req.body, &s.body_fields))
            .map(|s| {
                (
                    format!("{source}|sub:{} {}|{major}", route.method, route.template),
                    s.limit,
                )
            });
        if let Some((key, limit)) = &sub_key {
            let ws = st
                .subs
                .entry(key.clone())
                .or_insert_with(|| WindowState::new(limit));
            let e = evaluate(limit, ws, now);
            if !e.allowed {
                st.stats.sub_limit_429 += 1;
                self.count_invalid(st, req.ip, now);
                let headers = self.current_headers(st, route, &names, &keys, now);
                return self.limited(headers, "user", e.retry_after, MSG_USER, 0);
            }
        }

        // 6. Shared-scope storms: somebody else exhausted the resource.
        if let Some(storm) = &route.shared {
            if storm.majors.as_ref().is_none_or(|ms| ms.contains(&major)) {
                let key = format!("{} {}|{major}", route.method, route.template);
                let dur = u64::try_from(storm.duration.as_micros()).unwrap_or(u64::MAX);
                let draw = st.rng.next_f64();
                let s = st.storms.entry(key).or_default();
                let retry = if s.until > now {
                    Some(s.until - now)
                } else {
                    s.seen += 1;
                    let start = match storm.trigger {
                        StormTrigger::EveryNth(n) => n > 0 && s.seen.is_multiple_of(u64::from(n)),
                        StormTrigger::Probability(p) => draw < p,
                    };
                    if start {
                        s.until = now.saturating_add(dur);
                        Some(dur)
                    } else {
                        None
                    }
                };
                if let Some(retry) = retry {
                    st.stats.shared_429 += 1;
                    let headers = self.current_headers(st, route, &names, &keys, now);
                    return self.limited(headers, "shared", retry, MSG_SHARED, 0);
                }
            }
        }

        // 7. Admitted: count everywhere (4xx included, A.3).
        for ((_, _, _, limit), key) in names.iter().zip(&keys) {
            if let Some(c) = st.counters.get_mut(key) {
                commit(limit, &mut c.ws, now);
                c.stats.admitted.push(at);
                c.stats.latencies.push(req.latency);
                if let WindowState::Fixed {
                    start: Some(start),
                    count: 1,
                } = c.ws
                {
                    c.stats.windows.push(Duration::from_micros(start));
                }
            }
        }
        if let Some((key, limit)) = &sub_key {
            if let Some(ws) = st.subs.get_mut(key) {
                commit(limit, ws, now);
            }
        }
        let mut headers = Vec::new();
        if let (Some((_, hash, _, limit)), Some(e)) = (reported(route, &names), evals.first()) {
            let hash = reported_hash(st, route, hash);
            self.bucket_headers(&mut headers, limit, &hash, e.remaining, e.reset_after, now);
            if self.config.scope_on_success {
                headers.push(("x-ratelimit-scope", "user".to_owned()));
            }
        }
        headers.push(("via", "1.1 google".to_owned()));
        let status = route.status;
        let body = match status.as_u16() {
            204 => ReplyBody::Empty,
            200..=299 => {
                let id = st.next_id;
                st.next_id += 1;
                ReplyBody::Json(format!(
                    r#"{{"id": "{}"}}"#,
                    1_000_000_000_000_000_000u64 + id
                ))
            }
            401 => ReplyBody::Json(r#"{"message": "401: Unauthorized", "code": 0}"#.to_owned()),
            403 => ReplyBody::Json(r#"{"message": "Missing Access", "code": 50001}"#.to_owned()),
            404 if route.template.starts_with("/webhooks") => {
                ReplyBody::Json(r#"{"message": "Unknown Webhook", "code": 10015}"#.to_owned())
            }
            404 => ReplyBody::Json(r#"{"message": "Unknown Channel", "code": 10003}"#.to_owned()),
            _ => ReplyBody::Json(format!(r#"{{"message": "{status}", "code": 0}}"#)),
        };
        match status.as_u16() {
            200..=299 => st.stats.success += 1,
            401 => st.stats.unauthorized += 1,
            403 => st.stats.forbidden += 1,
            404 => st.stats.not_found += 1,
            _ => {}
        }
        if matches!(status.as_u16(), 401 | 403)
            || (route.errors_count_as_invalid && status.is_client_error())
        {
            self.count_invalid(st, req.ip, now);
        }
        if matches!(body, ReplyBody::Json(_)) {
            headers.push(("content-type", "application/json".to_owned()));
        }
        Reply {
            status,
            headers,
            body,
        }
    }

    /// The caller's reported bucket as it stands (nothing counted), for shared and sub-limit 429s.
    fn current_headers(
        &self,
        st: &State,
        route: &RouteConfig,
        names: &[(String, String, String, Limit)],
        keys: &[String],
        now: u64,
    ) -> Vec<(&'static str, String)> {
        let mut headers = Vec::new();
        if let (Some((_, hash, _, limit)), Some(key)) = (reported(route, names), keys.first()) {
            let (remaining, reset_after) = st
                .counters
                .get(key)
                .map_or((limit.limit_u64(), limit.period_us()), |c| {
                    peek(&c.limit, &c.ws, now)
                });
            self.bucket_headers(&mut headers, limit, hash, remaining, reset_after, now);
        }
        headers
    }

    fn bucket_headers(
        &self,
        headers: &mut Vec<(&'static str, String)>,
        limit: &Limit,
        hash: &str,
        remaining: u64,
        reset_after_us: u64,
        now: u64,
    ) {
        let reset_after_ms = ceil_ms(reset_after_us);
        let reset_epoch_ms = (self.epoch_start_us + i128::from(now)).div_euclid(1000)
            + i128::from(reset_after_ms)
            + i128::from(self.config.reset_skew_ms);
        headers.push(("x-ratelimit-limit", limit.limit.to_string()));
        headers.push(("x-ratelimit-remaining", remaining.to_string()));
        headers.push((
            "x-ratelimit-reset",
            format!(
                "{}.{:03}",
                reset_epoch_ms.div_euclid(1000),
                reset_epoch_ms.rem_euclid(1000)
            ),
        ));
        headers.push(("x-ratelimit-reset-after", secs3(reset_after_ms)));
        headers.push(("x-ratelimit-bucket", hash.to_owned()));
    }

    /// A 429 of scope `user` or `shared` with these bucket headers.
    fn limited(
        &self,
        mut headers: Vec<(&'static str, String)>,
        scope: &str,
        retry_us: u64,
        message: &str,
        code: u32,
    ) -> Reply {
        headers.insert(0, ("retry-after", retry_after_header(retry_us)));
        headers.push(("x-ratelimit-scope", scope.to_owned()));
        headers.push(("via", "1.1 google".to_owned()));
        headers.push(("content-type", "application/json".to_owned()));
        Reply {
            status: StatusCode::TOO_MANY_REQUESTS,
            headers,
            body: ReplyBody::Json(limited_body(message, retry_us, false, code)),
        }
    }

    fn ban_reply(&self) -> Reply {
        let body = self.config.ban.map(|b| b.body).unwrap_or_default();
        match body {
            crate::config::BanBody::Html => Reply {
                status: StatusCode::TOO_MANY_REQUESTS,
                headers: vec![("content-type", "text/html; charset=UTF-8".to_owned())],
                body: ReplyBody::Html(BAN_HTML.to_owned()),
            },
            crate::config::BanBody::Json => Reply {
                status: StatusCode::TOO_MANY_REQUESTS,
                headers: vec![("content-type", "application/json".to_owned())],
                body: ReplyBody::Json(BAN_JSON.to_owned()),
            },
        }
    }

    /// Counts a 401/403/non-shared 429 against the IP, and bans it past the threshold.
    fn count_invalid(&self, st: &mut State, ip: IpAddr, now: u64) {
        st.stats.invalid_requests += 1;
        let Some(ban) = self.config.ban else { return };
        let window = u64::try_from(ban.window.as_micros()).unwrap_or(u64::MAX);
        let log = st.invalid.entry(ip).or_default();
        while log
            .front()
            .is_some_and(|&t| t.saturating_add(window) <= now)
        {
            log.pop_front();
        }
        log.push_back(now);
        if log.len() >= ban.threshold as usize {
            log.clear();
            let until =
                now.saturating_add(u64::try_from(ban.duration.as_micros()).unwrap_or(u64::MAX));
            st.banned_until.insert(ip, until);
            st.stats.bans += 1;
            tracing::info!(%ip, "discord-sim: invalid-request threshold reached, banning");
        }
    }
}

/// The route of `routes` (compiled as `templates`) that `path` matches: the most literal segments win, then
/// table order.
pub(crate) fn match_route<'a>(
    routes: &'a [RouteConfig],
    templates: &[Template],
    method: &Method,
    path: &str,
) -> Option<&'a RouteConfig> {
    let mut best: Option<(usize, usize)> = None;
    for (i, (route, template)) in routes.iter().zip(templates).enumerate() {
        if route.method != *method {
            continue;
        }
        if let Some(score) = template.matches(path) {
            if best.is_none_or(|(_, s)| score > s) {
                best = Some((i, score));
            }
        }
    }
    best.map(|(i, _)| &routes[i])
}

/// Whether a JSON body has one of `fields` at top level (any body when `fields` is empty).
pub(crate) fn sub_limit_applies(body: &[u8], fields: &[String]) -> bool {
    body_has_field(body, fields)
}

/// Replaces the rate-limit numbers of `reply` with `fault`'s values (only those present).
fn corrupt(reply: &mut Reply, fault: HeaderFault) {
    let value = |name: &str| -> Option<&'static str> {
        Some(match (fault, name) {
            (HeaderFault::NonFinite, "x-ratelimit-reset")
            | (HeaderFault::NonFinite, "retry-after") => "inf",
            (HeaderFault::NonFinite, _) => "NaN",
            (HeaderFault::Negative, "x-ratelimit-limit") => "-5",
            (HeaderFault::Negative, "x-ratelimit-remaining")
            | (HeaderFault::Negative, "retry-after") => "-1",
            (HeaderFault::Negative, "x-ratelimit-reset") => "-1.000",
            (HeaderFault::Negative, _) => "-3.500",
            (HeaderFault::Huge, "x-ratelimit-remaining") => "99999999999999999999999",
            (HeaderFault::Huge, "x-ratelimit-limit") | (HeaderFault::Huge, "retry-after") => {
                "18446744073709551616"
            }
            (HeaderFault::Huge, _) => "1e308",
            (HeaderFault::Garbage, "x-ratelimit-reset-after") => "soon",
            (HeaderFault::Garbage, _) => "abc",
            (HeaderFault::AbsurdWindow, "x-ratelimit-remaining") => "0",
            (HeaderFault::AbsurdWindow, "x-ratelimit-limit") => return None,
            (HeaderFault::AbsurdWindow, "x-ratelimit-reset") => "4102444800.000",
            (HeaderFault::AbsurdWindow, _) => "31536000.000",
        })
    };
    const NUMERIC: [&str; 5] = [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "x-ratelimit-reset-after",
        "retry-after",
    ];
    for (name, v) in &mut reply.headers {
        if NUMERIC.contains(name) {
            if let Some(bad) = value(name) {
                bad.clone_into(v);
            }
        }
    }
    if let ReplyBody::Json(body) = &mut reply.body {
        if let Some(start) = body.find("\"retry_after\": ") {
            let from = start + "\"retry_after\": ".len();
            let end = body[from..].find(',').map_or(body.len(), |i| from + i);
            let bad = match fault {
                HeaderFault::NonFinite => "\"NaN\"",
                HeaderFault::Negative => "-1.5",
                HeaderFault::Huge => "1e400",
                HeaderFault::Garbage => "\"soon\"",
                HeaderFault::AbsurdWindow => "31536000.0",
            };
            body.replace_range(from..end, bad);
        }
    }
}

/// The bucket a route reports (the first counter), if it has one; layers never show.
fn reported<'a>(
    route: &RouteConfig,
    names: &'a [(String, String, String, Limit)],
) -> Option<&'a (String, String, String, Limit)> {
    if route.limit.is_some() || !route.age_tiers.is_empty() {
        names.first()
    } else {
        None
    }
}

/// The tier of an age-tiered route that `path`'s snowflake falls in.
fn age_tier<'a>(
    route: &'a RouteConfig,
    path: &str,
    now_unix_ms: i128,
) -> Option<&'a crate::config::AgeTier> {
    let param = route.age_param.as_ref()?;
    let wanted = format!("{{{param}}}");
    let index = route
        .template
        .split('/')
        .filter(|s| !s.is_empty())
        .position(|s| s == wanted)?;
    let id: u64 = path
        .split('/')
        .filter(|s| !s.is_empty())
        .nth(index)?
        .parse()
        .ok()?;
    let created_ms = i128::from(id >> 22) + 1_420_070_400_000;
    let age_ms = (now_unix_ms - created_ms).max(0);
    route.age_tiers.iter().find(|t| {
        t.younger_than
            .is_none_or(|d| age_ms < i128::try_from(d.as_millis()).unwrap_or(i128::MAX))
    })
}

/// The hash a response reports: `hash`, or the next in rotation with the route's alternates.
fn reported_hash(st: &mut State, route: &RouteConfig, hash: &str) -> String {
    if route.alternate_hashes.is_empty() {
        return hash.to_owned();
    }
    let n = st
        .rotations
        .entry(format!("{} {}", route.method, route.template))
        .or_insert(0);
    let i = (*n % (route.alternate_hashes.len() as u64 + 1)) as usize;
    *n += 1;
    if i == 0 {
        hash.to_owned()
    } else {
        route.alternate_hashes[i - 1].clone()
    }
}

/// The token of `Bot <t>` or `Bearer <t>`.
fn parse_token(header: &str) -> Option<&str> {
    let (scheme, token) = header.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bot") || scheme.eq_ignore_ascii_case("bearer"))
        .then_some(token.trim())
}

/// Whether a JSON body has one of `fields` at top level (any body when `fields` is empty).
fn body_has_field(body: &[u8], fields: &[String]) -> bool {
    if fields.is_empty() {
        return true;
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(map)) => fields.iter().any(|f| map.contains_key(f)),
        _ => false,
    }
}

fn ceil_ms(us: u64) -> u64 {
    us.div_ceil(1000)
}

/// Milliseconds as seconds with three decimals.
fn secs3(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// `Retry-After`: whole seconds, rounded up (A.5).
fn retry_after_header(us: u64) -> String {
    ceil_ms(us).div_ceil(1000).to_string()
}

fn limited_body(message: &str, retry_us: u64, global: bool, code: u32) -> String {
    format!(
        r#"{{"message": "{message}", "retry_after": {}, "global": {global}, "code": {code}}}"#,
        secs3(ceil_ms(retry_us))
    )
}

fn json_reply(status: StatusCode, body: &str) -> Reply {
    Reply {
        status,
        headers: vec![
            ("via", "1.1 google".to_owned()),
            ("content-type", "application/json".to_owned()),
        ],
        body: ReplyBody::Json(body.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> u64 {
        n * 1000
    }

    #[test]
    fn fixed_window_opens_on_first_request_and_resets_whole() {
        let l = Limit::fixed(2, Duration::from_millis(100));
        let mut ws = WindowState::new(&l);
        let e = evaluate(&l, &ws, ms(5));
        assert!(e.allowed && e.remaining == 1 && e.reset_after == ms(100));
        commit(&l, &mut ws, ms(5));
        let e = evaluate(&l, &ws, ms(50));
        assert!(e.allowed && e.remaining == 0 && e.reset_after == ms(55));
        commit(&l, &mut ws, ms(50));
        let e = evaluate(&l, &ws, ms(60));
        assert!(!e.allowed && e.retry_after == ms(45));
        let e = evaluate(&l, &ws, ms(105));
        assert!(e.allowed && e.remaining == 1 && e.reset_after == ms(100));
    }

    #[test]
    fn leaky_bucket_drains_one_at_a_time() {
        let l = Limit::leaky(4, Duration::from_millis(100)); // one per 25 ms
        let mut ws = WindowState::new(&l);
        for i in 0..4 {
            let e = evaluate(&l, &ws, 0);
            assert!(e.allowed);
            assert_eq!(e.remaining, 3 - i);
            assert_eq!(e.reset_after, ms(25) * (i + 1));
            commit(&l, &mut ws, 0);
        }
        let e = evaluate(&l, &ws, ms(10));
        assert!(!e.allowed);
        assert_eq!(e.retry_after, ms(15));
        assert_eq!(peek(&l, &ws, ms(25)), (1, ms(75)));
        assert!(evaluate(&l, &ws, ms(25)).allowed);
    }

    #[test]
    fn formatting() {
        assert_eq!(secs3(2148), "2.148");
        assert_eq!(retry_after_header(64_570_000), "65");
        assert_eq!(retry_after_header(1), "1");
        assert_eq!(retry_after_header(0), "0");
        assert_eq!(parse_token("Bot abc"), Some("abc"));
        assert_eq!(parse_token("Basic abc"), None);
        assert!(body_has_field(br#"{"name": "x"}"#, &["name".to_owned()]));
        assert!(!body_has_field(br#"{"nsfw": true}"#, &["name".to_owned()]));
    }
}
