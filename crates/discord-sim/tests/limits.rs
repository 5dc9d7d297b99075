//! The simulator over real HTTP on loopback: bucket headers and 429s, hash-shared and per-route counters,
//! majors, leaky windows, layered limits, sub-limits, shared scope, the global limit, tokens and the
//! invalid-request ban. Windows are 100 ms to 1 s so the suite runs in a few seconds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{bot, send};
use discord_sim::{
    BanBody, HeaderFault, Latency, Limit, RouteConfig, Scenario, SimConfig, Simulator,
    StormTrigger, DEFAULT_TOKEN,
};
use http::{Method, StatusCode};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn messages(limit: Limit) -> RouteConfig {
    RouteConfig::new(
        Method::POST,
        "/channels/{channel_id}/messages",
        "msghash",
        limit,
    )
}

#[tokio::test]
async fn naive_client_gets_user_429_with_discords_headers() {
    let sim = Simulator::start(SimConfig::empty().route(messages(Limit::fixed(2, ms(300)))))
        .await
        .unwrap();
    let c = reqwest::Client::new();
    let base = sim.base_url();
    assert!(base.ends_with("/api/v10"));

    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let r1 = bot(&c, &base, Method::POST, "/channels/1/messages").await;
    assert_eq!(r1.status, StatusCode::OK);
    assert_eq!(r1.h("x-ratelimit-limit"), "2");
    assert_eq!(r1.h("x-ratelimit-remaining"), "1");
    assert_eq!(r1.h("x-ratelimit-bucket"), "msghash");
    // The window opened on this request: the full period, three decimals.
    assert_eq!(r1.h("x-ratelimit-reset-after"), "0.300");
    let reset = r1.f("x-ratelimit-reset");
    assert!(
        reset > before + 0.25 && reset < before + 0.5,
        "reset {reset} vs now {before}"
    );
    assert_eq!(
        r1.h("x-ratelimit-reset").split('.').nth(1).unwrap().len(),
        3
    );
    assert_eq!(r1.h("via"), "1.1 google");
    assert!(!r1.has("x-ratelimit-scope") && !r1.has("retry-after"));
    assert!(r1.json()["id"].is_string());

    let r2 = bot(&c, &base, Method::POST, "/channels/1/messages").await;
    assert_eq!(r2.h("x-ratelimit-remaining"), "0");
    assert!(r2.f("x-ratelimit-reset-after") <= 0.300);
    // Reset is absolute: the same instant for every response of one window.
    assert!((r2.f("x-ratelimit-reset") - reset).abs() <= 0.002);

    let r3 = bot(&c, &base, Method::POST, "/channels/1/messages").await;
    assert_eq!(r3.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r3.h("x-ratelimit-scope"), "user");
    assert_eq!(r3.h("x-ratelimit-remaining"), "0");
    assert_eq!(r3.h("x-ratelimit-limit"), "2");
    assert_eq!(r3.h("x-ratelimit-bucket"), "msghash");
    assert_eq!(r3.h("retry-after"), "1"); // integer, rounded up
    assert!(!r3.has("x-ratelimit-global"));
    assert!(r3.h("content-type").starts_with("application/json"));
    let body = r3.json();
    assert_eq!(body["message"], "You are being rate limited.");
    assert_eq!(body["global"], false);
    assert_eq!(body["code"], 0);
    let wait = body["retry_after"].as_f64().unwrap();
    assert!(wait > 0.0 && wait <= 0.300, "precise wait {wait}");
    assert!((wait - r3.f("x-ratelimit-reset-after")).abs() < 0.002);

    // Waiting exactly the precise wait is enough, and the window resets whole.
    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    let r4 = bot(&c, &base, Method::POST, "/channels/1/messages").await;
    assert_eq!(r4.status, StatusCode::OK, "{}", r4.body);
    assert_eq!(r4.h("x-ratelimit-remaining"), "1");

    let s = sim.stats();
    assert_eq!((s.requests, s.success, s.user_429), (4, 3, 1));
    assert_eq!(s.invalid_requests, 1);
    let b = s.bucket("msghash", "channels/1").unwrap();
    assert_eq!(b.admitted.len(), 3);
    assert_eq!(b.rejected, 1);
}

#[tokio::test]
async fn hash_shared_counters_and_per_route_counters() {
    let reactions = "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}";
    let config = SimConfig::empty()
        .route(messages(Limit::fixed(5, ms(500))))
        .route(RouteConfig::new(
            Method::PATCH,
            "/channels/{channel_id}/messages/{message_id}",
            "msghash",
            Limit::fixed(5, ms(500)),
        ))
        .route(
            RouteConfig::new(
                Method::PUT,
                format!("{reactions}/@me"),
                "react",
                Limit::fixed(3, ms(500)),
            )
            .shared_counter(),
        )
        .route(
            RouteConfig::new(
                Method::DELETE,
                format!("{reactions}/@me"),
                "react",
                Limit::fixed(3, ms(500)),
            )
            .shared_counter(),
        );
    let sim = Simulator::start(config).await.unwrap();
    let c = reqwest::Client::new();
    let base = sim.base_url();

    // One hash, one counter: reactions PUT and DELETE draw on the same Remaining.
    let a = bot(
        &c,
        &base,
        Method::PUT,
        "/channels/1/messages/2/reactions/x/@me",
    )
    .await;
    let b = bot(
        &c,
        &base,
        Method::DELETE,
        "/channels/1/messages/2/reactions/y/@me",
    )
    .await;
    let d = bot(
        &c,
        &base,
        Method::PUT,
        "/channels/1/messages/3/reactions/x/@me",
    )
    .await;
    assert_eq!(a.h("x-ratelimit-remaining"), "2");
    assert_eq!(b.h("x-ratelimit-remaining"), "1");
    assert_eq!(d.h("x-ratelimit-remaining"), "0");
    assert_eq!(a.h("x-ratelimit-bucket"), b.h("x-ratelimit-bucket"));
    let e = bot(
        &c,
        &base,
        Method::DELETE,
        "/channels/1/messages/2/reactions/x/@me",
    )
    .await;
    assert_eq!(e.status, StatusCode::TOO_MANY_REQUESTS);

    // One hash, a counter per route (dapi#8073): PATCH after two POSTs starts at Limit - 1.
    bot(&c, &base, Method::POST, "/channels/1/messages").await;
    let p2 = bot(&c, &base, Method::POST, "/channels/1/messages").await;
    let patch = bot(&c, &base, Method::PATCH, "/channels/1/messages/9").await;
    assert_eq!(p2.h("x-ratelimit-remaining"), "3");
    assert_eq!(patch.h("x-ratelimit-remaining"), "4");
    assert_eq!(p2.h("x-ratelimit-bucket"), patch.h("x-ratelimit-bucket"));

    let s = sim.stats();
    assert_eq!(
        s.bucket("hash:react", "channels/1").unwrap().admitted.len(),
        3
    );
    assert_eq!(
        s.bucket("route:POST /channels/{channel_id}/messages", "channels/1")
            .unwrap()
            .admitted
            .len(),
        2
    );
}

#[tokio::test]
async fn majors_count_separately_unless_across_majors() {
    let config = SimConfig::empty()
        .route(messages(Limit::fixed(1, ms(500))))
        .route(
            RouteConfig::new(
                Method::POST,
                "/webhooks/{webhook_id}/{webhook_token}",
                "wh",
                Limit::fixed(1, ms(500)),
            )
            .across_majors(),
        );
    let sim = Simulator::start(config).await.unwrap();
    let c = reqwest::Client::new();
    let base = sim.base_url();

    assert_eq!(
        bot(&c, &base, Method::POST, "/channels/1/messages")
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        bot(&c, &base, Method::POST, "/channels/1/messages")
            .await
            .status,
        StatusCode::TOO_MANY_REQUESTS
    );
    let other = bot(&c, &base, Method::POST, "/channels/2/messages").await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.h("x-ratelimit-remaining"), "0");

    // Webhooks (no Authorization needed) sharing one counter across webhooks (dapi#6753).
    let w1 = send(&c, &base, Method::POST, "/webhooks/1/aaa", None, Some("{}")).await;
    let w2 = send(&c, &base, Method::POST, "/webhooks/2/bbb", None, Some("{}")).await;
    assert_eq!(w1.status, StatusCode::OK);
    assert_eq!(w2.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(w2.h("x-ratelimit-bucket"), "wh");
}

#[tokio::test]
async fn leaky_window_refills_one_at_a_time_and_reset_after_moves() {
    let sim = Simulator::start(SimConfig::empty().route(messages(Limit::leaky(4, ms(400)))))
        .await
        .unwrap();
    let c = reqwest::Client::new();
    let base = sim.base_url();
    let mut resets = Vec::new();
    for expected in ["3", "2", "1", "0"] {
        let r = bot(&c, &base, Method::POST, "/channels/1/messages").await;
        assert_eq!(r.h("x-ratelimit-remaining"), expected);
        resets.push(r.f("x-ratelimit-reset-after"));
    }
    // Reset-After grows with each request (one more unit to drain), unlike a fixed window.
    assert!(resets.windows(2).all(|w| w[1] > w[0]), "{resets:?}");
    assert!(resets[0] <= 0.100 && resets[3] > 0.300, "{resets:?}");
    let limited = bot(&c, &base, Method::POST, "/channels/1/messages").await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    let wait = limited.json()["retry_after"].as_f64().unwrap();
    // The next unit frees within one leak interval (100 ms), not after a whole window.
    assert!(wait > 0.0 && wait <= 0.100, "{wait}");
    tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    let r = bot(&c, &base, Method::POST, "/channels/1/messages").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.h("x-ratelimit-remaining"), "0");
}

#[tokio::test]
async fn layered_limit_is_hidden_until_it_trips() {
    let sim = Simulator::start(SimConfig::scenario_layered())
        .await
        .unwrap();
    let c = reqwest::Client::new();
    let base = sim.base_url();
    for i in 0..5u32 {
        let r = bot(&c, &base, Method::POST, "/channels/100/messages").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.h("x-ratelimit-bucket"), discord_sim::HASH_LAYER_BIG);
        assert_eq!(r.h("x-ratelimit-limit"), "50000");
        assert_eq!(r.h("x-ratelimit-remaining"), (49_999 - i).to_string());
    }
    let r = bot(&c, &base, Method::POST, "/channels/100/messages").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.h("x-ratelimit-scope"), "user");
    assert_eq!(r.h("x-ratelimit-bucket"), discord_sim::HASH_LAYER_SMALL);
    assert_eq!(r.h("x-ratelimit-limit"), "5");
    assert_eq!(r.h("x-ratelimit-remaining"), "0");
    assert!(r.f("x-ratelimit-reset-after") <= 0.5);
    // The other channel's hidden limit is its own.
    let other = bot(&c, &base, Method::POST, "/channels/101/messages").await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(sim.stats().user_429, 1);
}

#[tokio::test]
async fn sub_limit_answers_429_while_remaining_is_positive() {
    let sim = Simulator::start(SimConfig::scenario_sublimit())
        .await
        .unwrap();
    let c = reqwest::Client::new();
    let base = sim.base_url();
    let t = Some(DEFAULT_TOKEN);
    let rename = Some(r#"{"name": "x"}"#);
    for _ in 0..2 {
        let r = send(&c, &base, Method::PATCH, "/channels/100", t, rename).await;
        assert_eq!(r.status, StatusCode::OK);
    }
    let r = send(&c, &base, Method::PATCH, "/channels/100", t, rename).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.h("x-ratelimit-scope"), "user");
    assert_eq!(r.h("x-ratelimit-limit"), "10");
    assert_eq!(r.h("x-ratelimit-remaining"), "8"); // > 0: the signature of a sub-limit
    let wait = r.json()["retry_after"].as_f64().unwrap();
    assert!(wait > 0.4 && wait <= 0.6, "{wait}");
    assert!(wait < r.f("x-ratelimit-reset-after"));
    // Edits without name/topic are not held back.
    let other = send(
        &c,
        &base,
        Method::PATCH,
        "/channels/100",
        t,
        Some(r#"{"nsfw": true}"#),
    )
    .await;
    assert_eq!(other.status, StatusCode::OK);
    assert_eq!(other.h("x-ratelimit-remaining"), "7");
    // Another channel has its own sub-limit.
    let elsewhere = send(&c, &base, Method::PATCH, "/channels/101", t, rename).await;
    assert_eq!(elsewhere.status, StatusCode::OK);
    let s = sim.stats();
    assert_eq!((s.sub_limit_429, s.user_429, s.invalid_requests), (1, 0, 1));
}

#[tokio::test]
async fn shared_scope_storm_overrides_and_is_not_invalid() {
    let config = SimConfig::empty().route(messages(Limit::fixed(10, ms(1000))).shared_storm(
        StormTrigger::EveryNth(2),
        ms(200),
        None,
    ));
    let sim = Simulator::start(config).await.unwrap();
    let c = reqwest::Client::new();
    let base = sim.base_url();
    let ok = bot(&c, &base, Method::POST, "/channels/1/messages").await;
    assert_eq!(ok.status, StatusCode::OK);
    let shared = bot(&c, &base, Method::POST, "/channels/1/messages").await;
    assert_eq!(shared.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(shared.h("x-ratelimit-scope"), "shared");
    // The caller's own counter, not decremented by the shared 429.
    assert_eq!(shared.h("x-ratelimit-remaining"), "9");
    assert_eq!(shared.h("retry-after"), "1");
    let body = shared.json();
    assert_eq!(body["message"], "The resource is being rate limited.");
    assert_eq!(body["retry_after"].as_f64().unwrap(), 0.2);
    // During the storm everyone gets it, with the remaining storm time.
    let again = bot(&c, &base, Method::POST, "/channels/1/messages").await;
    assert_eq!(again.h("x-ratelimit-scope"), "shared");
    assert!(again.json()["retry_after"].as_f64().unwrap() <= 0.2);
    tokio::time::sleep(ms(200)).await;
    let after = bot(&c, &base, Method::POST, "/channels/1/messages").await;
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(after.h("x-ratelimit-remaining"), "8");
    let s = sim.stats();
    assert_eq!(
        (s.shared_429, s.invalid_requests, s.non_shared_429()),
        (2, 0, 0)
    );
}

#[tokio::test]
async fn global_limit_is_a_sliding_window_per_token_with_exemptions() {
    let config = SimConfig::empty()
        .route(RouteConfig::unlimited(Method::GET, "/users/{user_id}"))
        .route(RouteConfig::new(
            Method::POST,
            "/interactions/{id}/{token}/callback",
            "cb",
            Limit::fixed(100, ms(1000)),
        ))
        .token("second-token")
        .global(10, ms(1000));
    let sim = Simulator::start(config).await.unwrap();
    let c = reqwest::Client::new();
    let base = sim.base_url();

    // 30 requests at once: exactly 10 pass, however they interleave.
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let (c, base) = (c.clone(), base.clone());
            tokio::spawn(async move { bot(&c, &base, Method::GET, &format!("/users/{i}")).await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let r = t.await.unwrap();
        if r.status == StatusCode::OK {
            ok += 1;
            // A route without a bucket sends no bucket headers.
            assert!(!r.has("x-ratelimit-limit"));
        } else {
            assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
            assert_eq!(r.h("x-ratelimit-global"), "true");
            assert_eq!(r.h("x-ratelimit-scope"), "global");
            assert!(!r.has("x-ratelimit-limit") && !r.has("x-ratelimit-bucket"));
            assert!(!r.has("x-ratelimit-reset-after"));
            let body = r.json();
            assert_eq!(body["global"], true);
            let wait = body["retry_after"].as_f64().unwrap();
            assert!(wait > 0.0 && wait <= 1.0, "{wait}");
        }
    }
    assert_eq!(ok, 10);
    // Interaction callbacks are exempt; another token has its own global window.
    let cb = send(
        &c,
        &base,
        Method::POST,
        "/interactions/1/tok/callback",
        None,
        Some("{}"),
    )
    .await;
    assert_eq!(cb.status, StatusCode::OK);
    let other = send(
        &c,
        &base,
        Method::GET,
        "/users/1",
        Some("second-token"),
        None,
    )
    .await;
    assert_eq!(other.status, StatusCode::OK);

    let s = sim.stats();
    assert_eq!(s.global_429, 20);
    let g = s.global.iter().find(|g| g.source == DEFAULT_TOKEN).unwrap();
    assert_eq!(g.admitted.len(), 10);
    assert!(g.peak_in_period() <= 10);

    // The sliding window frees slots as the oldest age out, not at a boundary.
    tokio::time::sleep(ms(1010)).await;
    assert_eq!(
        bot(&c, &base, Method::GET, "/users/1").await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn concurrent_requests_never_exceed_a_bucket() {
    let sim = Simulator::start(SimConfig::empty().route(messages(Limit::fixed(5, ms(1000)))))
        .await
        .unwrap();
    let c = reqwest::Client::new();
    let base = sim.base_url();
    let tasks: Vec<_> = (0..25)
        .map(|_| {
            let (c, base) = (c.clone(), base.clone());
            tokio::spawn(async move {
                bot(&c, &base, Method::POST, "/channels/7/messages")
                    .await
                    .status
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if t.await.unwrap() == StatusCode::OK {
            ok += 1;
        }
    }
    assert_eq!(ok, 5);
    let s = sim.stats();
    assert_eq!((s.success, s.user_429), (5, 20));
}

#[tokio::test]
async fn unknown_missing_and_revoked_tokens_get_401() {
    let sim = Simulator::start(SimConfig::empty().route(messages(Limit::fixed(5, ms(1000)))))
        .await
        .unwrap();
    let c = reqwest::Client::new();
    let base = sim.base_url();
    let p = "/channels/1/messages";
    let unknown = send(&c, &base, Method::POST, p, Some("nope"), None).await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert!(!unknown.has("x-ratelimit-limit"));
    assert_eq!(unknown.json()["message"], "401: Unauthorized");
    assert_eq!(
        send(&c, &base, Method::POST, p, None, None).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(bot(&c, &base, Method::POST, p).await.status, StatusCode::OK);
    sim.revoke_token(DEFAULT_TOKEN);
    assert_eq!(
        bot(&c, &base, Method::POST, p).await.status,
        StatusCode::UNAUTHORIZED
    );
    // An unknown route is a 404, not an invalid request.
    let before = sim.stats().invalid_requests;
    let nf = send(&c, &base, Method::GET, "/nowhere", Some("nope"), None).await;
    assert_eq!(nf.status, StatusCode::UNAUTHORIZED); // the token is checked first
    let s = sim.stats();
    assert_eq!(s.unauthorized, 4);
    assert_eq!(s.invalid_requests, before + 1);
}

#[tokio::test]
async fn invalid_requests_ban_the_ip_with_a_cloudflare_page_then_expire() {
    let config = SimConfig::empty()
        .route(
            RouteConfig::new(
                Method::GET,
                "/guilds/{guild_id}/audit-logs",
                "audit",
                Limit::fixed(50, ms(1000)),
            )
            .status(StatusCode::FORBIDDEN),
        )
        .route(RouteConfig::unlimited(Method::GET, "/users/{user_id}"))
        .ban(5, ms(2000), ms(500));
    let sim = Simulator::start(config).await.unwrap();
    let c = reqwest::Client::new();
    let base = sim.base_url();
    for _ in 0..5 {
        let r = bot(&c, &base, Method::GET, "/guilds/1/audit-logs").await;
        assert_eq!(r.status, StatusCode::FORBIDDEN);
        assert_eq!(r.h("x-ratelimit-bucket"), "audit"); // a 403 still counts in its bucket
    }
    let banned = bot(&c, &base, Method::GET, "/users/1").await;
    assert_eq!(banned.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(banned
        .headers
        .keys()
        .all(|k| !k.as_str().starts_with("x-ratelimit")));
    assert!(!banned.has("via"));
    assert!(banned.h("content-type").starts_with("text/html"));
    assert!(banned.body.contains("1015"));
    let s = sim.stats();
    assert!(s.banned);
    assert_eq!((s.forbidden, s.bans, s.cloudflare_429), (5, 1, 1));

    tokio::time::sleep(ms(520)).await;
    let r = bot(&c, &base, Method::GET, "/users/1").await;
    assert_eq!(r.status, StatusCode::OK);
    assert!(!sim.stats().banned);
}

#[tokio::test]
async fn repeated_429s_ban_with_json_body_and_unban_lifts_it() {
    let mut config = SimConfig::empty()
        .route(messages(Limit::fixed(1, ms(1000))))
        .ban(4, ms(1000), ms(5000));
    if let Some(b) = &mut config.ban {
        b.body = BanBody::Json;
    }
    let sim = Simulator::start(config).await.unwrap();
    let c = reqwest::Client::new();
    let base = sim.base_url();
    let p = "/channels/1/messages";
    assert_eq!(bot(&c, &base, Method::POST, p).await.status, StatusCode::OK);
    for _ in 0..4 {
        let r = bot(&c, &base, Method::POST, p).await;
        assert_eq!(r.h("x-ratelimit-scope"), "user");
    }
    let banned = bot(&c, &base, Method::POST, p).await;
    assert_eq!(banned.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(!banned.has("x-ratelimit-scope") && !banned.has("via"));
    assert_eq!(banned.json()["code"], 0);
    assert!(banned.json()["message"]
        .as_str()
        .unwrap()
        .contains("blocked"));
    sim.unban_all();
    // Unbanned: a genuine (bucket) 429 again, not Cloudflare's.
    assert!(bot(&c, &base, Method::POST, p)
        .await
        .has("x-ratelimit-scope"));
}

#[tokio::test]
async fn latency_is_applied_and_scenario_knobs_work() {
    let config = SimConfig::empty()
        .route(messages(Limit::fixed(5, ms(1000))))
        .latency(Latency::Fixed(ms(60)));
    let sim = Simulator::start(config).await.unwrap();
    let c = reqwest::Client::new();
    let t0 = Instant::now();
    bot(&c, &sim.base_url(), Method::POST, "/channels/1/messages").await;
    assert!(t0.elapsed() >= ms(60));

    // Scaling shrinks every window.
    let scaled = SimConfig::default().scaled(0.1);
    let msg = scaled
        .routes
        .iter()
        .find(|r| r.template == "/channels/{channel_id}/messages" && r.method == Method::POST)
        .unwrap();
    assert_eq!(msg.limit.unwrap().period, ms(500));
    assert_eq!(scaled.global.unwrap().period, ms(100));
}

#[tokio::test]
async fn skewed_reset_and_scope_on_success() {
    let mut config = SimConfig::empty().route(messages(Limit::fixed(5, ms(1000))));
    config.reset_skew_ms = -10_000;
    config.scope_on_success = true;
    let sim = Simulator::start(config).await.unwrap();
    let c = reqwest::Client::new();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let r = bot(&c, &sim.base_url(), Method::POST, "/channels/1/messages").await;
    assert_eq!(r.h("x-ratelimit-scope"), "user");
    // The server's clock is 10 s behind: Reset is in the "past" while Reset-After is unaffected.
    assert!(r.f("x-ratelimit-reset") < now - 8.0);
    assert_eq!(r.h("x-ratelimit-reset-after"), "1.000");
}

#[tokio::test]
async fn alternating_hashes_rotate_over_one_counter() {
    let config =
        SimConfig::empty().route(messages(Limit::fixed(5, ms(1000))).alternate_hashes(&["other"]));
    let sim = Simulator::start(config).await.unwrap();
    let c = reqwest::Client::new();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let r = bot(&c, &sim.base_url(), Method::POST, "/channels/1/messages").await;
        seen.push((
            r.h("x-ratelimit-bucket").to_owned(),
            r.h("x-ratelimit-remaining").to_owned(),
        ));
    }
    let expected = [("msghash", "4"), ("other", "3"), ("msghash", "2")];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(h, r)| ((*h).to_owned(), (*r).to_owned()))
        .collect();
    assert_eq!(seen, expected);
}

#[tokio::test]
async fn utilisation_measures_from_admission_records() {
    let sim = Simulator::start(SimConfig::empty().route(messages(Limit::fixed(2, ms(100)))))
        .await
        .unwrap();
    let c = reqwest::Client::new();
    let base = sim.base_url();
    let p = "/channels/1/messages";
    // Window 1: one request of two; window 2: full; window 3: one (the tail).
    bot(&c, &base, Method::POST, p).await;
    tokio::time::sleep(ms(110)).await;
    bot(&c, &base, Method::POST, p).await;
    bot(&c, &base, Method::POST, p).await;
    tokio::time::sleep(ms(110)).await;
    bot(&c, &base, Method::POST, p).await;
    let s = sim.stats();
    let b = s.bucket("msghash", "channels/1").unwrap();
    assert_eq!(b.windows.len(), 3);
    assert_eq!(b.admitted.len(), 4);
    assert!((b.window_fill() - 0.75).abs() < 1e-9, "{}", b.window_fill());
    // Span 220+ ms holds three windows: at most 6.
    assert_eq!(b.max_allowed(), 6);
    assert!((b.utilisation() - 4.0 / 6.0).abs() < 1e-9);
    // Four requests need one reset (100 ms); it took more than twice that.
    assert!(
        b.efficiency() < 0.5 && b.efficiency() > 0.3,
        "{}",
        b.efficiency()
    );
    assert!(s.global[0].windows.is_empty());
}

#[tokio::test]
async fn invalid_configurations_are_refused_with_what_to_change() {
    let zero = SimConfig::empty().route(messages(Limit::fixed(0, ms(100))));
    let err = Simulator::start(zero).await.unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    assert!(err.to_string().contains("limit 0"), "{err}");
    let storm = SimConfig::empty().route(messages(Limit::fixed(1, ms(100))).shared_storm(
        StormTrigger::Probability(1.5),
        ms(10),
        None,
    ));
    assert!(storm
        .validate()
        .unwrap_err()
        .to_string()
        .contains("probability"));
    let template = SimConfig::empty().route(messages(Limit::fixed(1, ms(100))));
    let mut template = template;
    template.routes[0].template = "channels/{id}".to_owned();
    assert!(template.validate().is_err());
    assert!(Scenario::all().iter().all(|s| s.config.validate().is_ok()));
    assert!(SimConfig::default().validate().is_ok());
}

#[tokio::test]
async fn header_faults_corrupt_what_the_client_reads_not_the_decision() {
    let mut config = SimConfig::empty();
    let faults = [
        ("nonfinite", HeaderFault::NonFinite, "NaN"),
        ("negative", HeaderFault::Negative, "-1"),
        ("huge", HeaderFault::Huge, "99999999999999999999999"),
        ("garbage", HeaderFault::Garbage, "abc"),
        ("absurd", HeaderFault::AbsurdWindow, "0"),
    ];
    for (name, fault, _) in faults {
        config = config.route(
            RouteConfig::new(
                Method::POST,
                format!("/{name}/{{id}}"),
                name,
                Limit::fixed(1, ms(1000)),
            )
            .header_fault(fault),
        );
    }
    let sim = Simulator::start(config).await.unwrap();
    let c = reqwest::Client::new();
    let base = sim.base_url();
    for (name, _, remaining) in faults {
        let ok = bot(&c, &base, Method::POST, &format!("/{name}/1")).await;
        assert_eq!(ok.status, StatusCode::OK, "{name}");
        assert_eq!(ok.h("x-ratelimit-remaining"), remaining, "{name}");
        assert_eq!(ok.h("x-ratelimit-bucket"), name);
        // The limit still holds: the second request is refused, with a corrupted wait.
        let limited = bot(&c, &base, Method::POST, &format!("/{name}/1")).await;
        assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS, "{name}");
        let wait = limited.h("retry-after").to_owned();
        assert_ne!(wait, "1", "{name}");
        assert!(
            !limited.body.contains("\"retry_after\": 0.") || name == "absurd",
            "{}",
            limited.body
        );
    }
    // (No major here: /absurd/2 shares the exhausted counter and is refused, still absurdly.)
    let absurd = bot(&c, &base, Method::POST, "/absurd/2").await;
    assert_eq!(absurd.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(absurd.h("x-ratelimit-reset-after"), "31536000.000");
    assert_eq!(absurd.h("x-ratelimit-limit"), "1");
    let huge = bot(&c, &base, Method::POST, "/huge/1").await;
    assert!(huge.body.contains("1e400"), "{}", huge.body);
    let s = sim.stats();
    assert_eq!((s.success, s.user_429), (5, 7));
}

#[tokio::test]
async fn message_deletes_pick_a_bucket_by_snowflake_age() {
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let c = reqwest::Client::new();
    let base = sim.base_url();
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let snowflake = |age_ms: u64| ((now_ms - age_ms - 1_420_070_400_000) << 22).to_string();
    let cases = [
        (1_000, discord_sim::HASH_DELETE, "5"),
        (24 * 3600 * 1000, discord_sim::HASH_DELETE_RECENT, "3"),
        (30 * 24 * 3600 * 1000, discord_sim::HASH_DELETE_OLD, "30"),
    ];
    for (age, hash, limit) in cases {
        let r = bot(
            &c,
            &base,
            Method::DELETE,
            &format!("/channels/1/messages/{}", snowflake(age)),
        )
        .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT);
        assert_eq!(r.h("x-ratelimit-bucket"), hash);
        assert_eq!(r.h("x-ratelimit-limit"), limit);
        // Each tier is its own counter: the first request of each sees Limit - 1.
        assert_eq!(
            r.h("x-ratelimit-remaining"),
            (limit.parse::<u32>().unwrap() - 1).to_string()
        );
    }
    // Three recent deletes empty their tier; the fourth is refused with that tier's numbers.
    for _ in 0..2 {
        bot(
            &c,
            &base,
            Method::DELETE,
            &format!("/channels/1/messages/{}", snowflake(3_600_000)),
        )
        .await;
    }
    let r = bot(
        &c,
        &base,
        Method::DELETE,
        &format!("/channels/1/messages/{}", snowflake(3_600_000)),
    )
    .await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.h("x-ratelimit-bucket"), discord_sim::HASH_DELETE_RECENT);
    // Old deletes are unaffected.
    let old = bot(
        &c,
        &base,
        Method::DELETE,
        &format!("/channels/1/messages/{}", snowflake(40 * 24 * 3600 * 1000)),
    )
    .await;
    assert_eq!(old.h("x-ratelimit-remaining"), "28");
}

#[tokio::test]
async fn without_a_token_the_global_limit_and_the_ban_count_per_ip() {
    let config = SimConfig::empty()
        .route(
            RouteConfig::unlimited(Method::POST, "/webhooks/{webhook_id}")
                .requires_auth(false)
                .exempt_global(false),
        )
        .route(RouteConfig::unlimited(Method::GET, "/users/{user_id}"))
        .token("second-token")
        .global(3, ms(1000))
        .ban(4, ms(2000), ms(2000));
    let sim = Simulator::start(config).await.unwrap();
    let c = reqwest::Client::new();
    let base = sim.base_url();
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(
            send(&c, &base, Method::POST, "/webhooks/1", None, Some("{}"))
                .await
                .status,
        );
    }
    assert_eq!(statuses[..3], [StatusCode::OK; 3]);
    assert_eq!(statuses[3], StatusCode::TOO_MANY_REQUESTS);
    let s = sim.stats();
    assert!(
        s.global
            .iter()
            .any(|g| g.source == "ip:127.0.0.1" && g.admitted.len() == 3),
        "{:?}",
        s.global
    );
    // The token's own global window is untouched by the IP's.
    assert_eq!(
        bot(&c, &base, Method::GET, "/users/1").await.status,
        StatusCode::OK
    );
    // Invalid requests add up per IP whatever the token: the global 429 above and three 401s from a
    // mistyped token reach the threshold of 4, and then every token on the IP is banned.
    for _ in 0..3 {
        send(&c, &base, Method::GET, "/users/1", Some("typo"), None).await;
    }
    let banned = send(
        &c,
        &base,
        Method::GET,
        "/users/1",
        Some("second-token"),
        None,
    )
    .await;
    assert_eq!(banned.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(!banned.has("via"));
    assert_eq!(sim.stats().invalid_requests, 4);
}

#[tokio::test]
async fn a_deleted_webhook_hammered_with_404s_earns_a_ban() {
    let config = SimConfig::empty()
        .route(
            RouteConfig::new(
                Method::POST,
                "/webhooks/{webhook_id}/{webhook_token}",
                "wh",
                Limit::fixed(100, ms(1000)),
            )
            .status(StatusCode::NOT_FOUND)
            .errors_count_as_invalid(true),
        )
        .ban(3, ms(2000), ms(2000));
    let sim = Simulator::start(config).await.unwrap();
    let c = reqwest::Client::new();
    let base = sim.base_url();
    for _ in 0..3 {
        let r = send(
            &c,
            &base,
            Method::POST,
            "/webhooks/1/gone",
            None,
            Some("{}"),
        )
        .await;
        assert_eq!(r.status, StatusCode::NOT_FOUND);
        assert_eq!(r.json()["code"], 10015); // Unknown Webhook
    }
    let banned = send(
        &c,
        &base,
        Method::POST,
        "/webhooks/1/gone",
        None,
        Some("{}"),
    )
    .await;
    assert_eq!(banned.status, StatusCode::TOO_MANY_REQUESTS);
    let s = sim.stats();
    assert_eq!((s.not_found, s.invalid_requests, s.bans), (3, 3, 1));
}
