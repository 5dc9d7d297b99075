//! Sends a burst of Discord REST calls through the client layer and prints what happened.
//!
//! ```text
//! cargo run --example discord_client -- --channels 10 --messages 200 --reactions 100
//! ```
//!
//! `--messages N` message creates and `--reactions R` reaction adds are spread over `--channels C` channel
//! ids (`--first-channel ID` and up, default 100); reactions go to message `--reaction-message ID` (default:
//! `9000 + channel id`, the messages the bundled simulator's scenarios use); `--global N` sets the global
//! limit per second (default 50, Discord's; the simulator's `mixed` scenario allows 50 per 200 ms, more in a
//! second but never more than 50 at once, so keep 50: a higher figure takes global 429s). Everything is
//! issued at once,
//! and the layer schedules it: buckets learned from the headers, parallel within a bucket, the global limit,
//! retries. At the end it prints requests, retries, 2xx, 429s by scope, the total wait and the elapsed time.
//!
//! This is the tower path (`RateLimitLayer` over `ReqwestService`, any `Service<http::Request<_>>` works the
//! same); an application built on reqwest would rather add `reqwest::RateLimitMiddleware` to a
//! `reqwest_middleware::ClientBuilder`, as the crate's README shows.
//!
//! The target is `DISCORD_API_BASE` (default `https://discord.com/api/v10`; this example's reqwest has no
//! TLS, so use an `http://` base such as the simulator's) with the bot token in `DISCORD_TOKEN`. Without a
//! token it explains how to run it against the bundled simulator:
//!
//! ```text
//! cargo run --example discord_sim -- --addr 127.0.0.1:8787 --scenario mixed
//! DISCORD_API_BASE=http://127.0.0.1:8787/api/v10 DISCORD_TOKEN=sim-token \
//!     cargo run --example discord_client -- --channels 10 --messages 200 --reactions 100
//! ```
//!
//! With `REDIS_URL` set, the limiter shares one budget through Redis with every other process of the
//! same `RATELIMIT_NAMESPACE` (default `discord-client`): the global limit, each bucket's window, what
//! the routes map to, the ban. `RATELIMIT_INSTANCES` (default 1) says how many processes share it: if
//! Redis fails, each keeps the global limit divided by that. Two copies, each sending half of the load
//! above to the same channels, against one simulator and one Redis:
//!
//! ```text
//! redis-server --port 6379 &
//! export DISCORD_API_BASE=http://127.0.0.1:8787/api/v10 DISCORD_TOKEN=sim-token \
//!     REDIS_URL=redis://127.0.0.1:6379/ RATELIMIT_INSTANCES=2
//! cargo build --example discord_client
//! for _ in 1 2; do
//!     target/debug/examples/discord_client --channels 10 --messages 100 --reactions 50 &
//! done; wait
//! ```
//!
//! The simulator's `--scenario mixed` limits apply to both together; without `REDIS_URL` each copy
//! learns them alone and the two overrun them (the 429s show in the counts printed at the end).

use std::collections::BTreeMap;
use std::time::Instant;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use ratelimit_client::profile::Discord;
use ratelimit_client::reqwest::ReqwestService;
use ratelimit_client::shared::SharedBudget;
use ratelimit_client::{Attempts, Exhausted, Limiter, RateLimitLayer};
use tower::Layer;

struct Args {
    channels: u64,
    messages: u64,
    reactions: u64,
    first_channel: u64,
    reaction_message: Option<u64>,
    global: u32,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        channels: 10,
        messages: 200,
        reactions: 100,
        first_channel: 100,
        reaction_message: None,
        global: 50,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |name: &str| -> Result<u64, String> {
            it.next()
                .ok_or(format!("{name} needs a value"))?
                .parse()
                .map_err(|e| format!("{name}: {e}"))
        };
        match flag.as_str() {
            "--channels" => a.channels = value("--channels")?.max(1),
            "--messages" => a.messages = value("--messages")?,
            "--reactions" => a.reactions = value("--reactions")?,
            "--first-channel" => a.first_channel = value("--first-channel")?,
            "--reaction-message" => a.reaction_message = Some(value("--reaction-message")?),
            "--global" => {
                a.global = u32::try_from(value("--global")?.max(1))
                    .map_err(|e| format!("--global: {e}"))?
            }
            "-h" | "--help" => {
                return Err(
                    "usage: discord_client [--channels C] [--messages N] [--reactions R] \
                            [--first-channel ID] [--reaction-message ID] [--global PER_SECOND]"
                        .into(),
                )
            }
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(a)
}

/// The namespace copies of this example share when `RATELIMIT_NAMESPACE` is not set.
const DEFAULT_NAMESPACE: &str = "discord-client";

/// A budget shared through the Redis at `REDIS_URL`, if set.
async fn shared_budget() -> Result<Option<SharedBudget>, Box<dyn std::error::Error + Send + Sync>> {
    let Ok(url) = std::env::var("REDIS_URL") else {
        return Ok(None);
    };
    let namespace =
        std::env::var("RATELIMIT_NAMESPACE").unwrap_or_else(|_| DEFAULT_NAMESPACE.to_owned());
    let instances = match std::env::var("RATELIMIT_INSTANCES") {
        Ok(n) => n
            .parse()
            .map_err(|e| format!("RATELIMIT_INSTANCES={n:?}: {e}"))?,
        Err(_) => 1,
    };
    let budget = SharedBudget::builder()
        .namespace(namespace)
        .instances(instances)
        .connect(&url)
        .await?;
    println!(
        "sharing the budget of namespace {:?} through {url} ({instances} instances)",
        budget.namespace()
    );
    Ok(Some(budget))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let Ok(token) = std::env::var("DISCORD_TOKEN") else {
        println!(
            "DISCORD_TOKEN is not set. To try the client without a Discord account, start the bundled \
             simulator in one terminal:\n\n    cargo run --example discord_sim -- --addr 127.0.0.1:8787 --scenario mixed\n\n\
             and in another:\n\n    DISCORD_API_BASE=http://127.0.0.1:8787/api/v10 DISCORD_TOKEN=sim-token \\\n        \
             cargo run --example discord_client -- --channels 10 --messages 200 --reactions 100\n\n\
             Against Discord itself, set DISCORD_TOKEN to a bot token and the channel ids with --first-channel."
        );
        return Ok(());
    };
    let base =
        std::env::var("DISCORD_API_BASE").unwrap_or_else(|_| "https://discord.com/api/v10".into());
    let base = base.trim_end_matches('/').to_owned();

    let shared = shared_budget().await?;
    let mut builder = Limiter::builder(Discord::new());
    if let Some(budget) = &shared {
        builder = builder.shared(budget.clone());
    }
    let limiter = builder
        .global_limit(Some(args.global))
        // A batch: every operation waits its turn, however long the queue (by default a request fails with
        // `Error::WouldWait` past 30 s of waiting).
        .wait_forever()
        // Count the 429s the layer could not get past as responses, rather than failing on them.
        .on_exhausted(Exhausted::Respond)
        .build()?;
    let client =
        RateLimitLayer::new(limiter.clone()).layer(ReqwestService::new(reqwest::Client::new()));

    let mut calls = Vec::new();
    for i in 0..args.messages {
        let c = args.first_channel + i % args.channels;
        let body = format!(r#"{{"content":"message {i} from ratelimit-client"}}"#);
        calls.push((Method::POST, format!("{base}/channels/{c}/messages"), body));
    }
    const EMOJI: [&str; 4] = [
        "%F0%9F%91%8D",
        "%E2%9D%A4%EF%B8%8F",
        "%F0%9F%8E%89",
        "%F0%9F%98%80",
    ];
    for i in 0..args.reactions {
        let c = args.first_channel + i % args.channels;
        let m = args.reaction_message.unwrap_or(9000 + c);
        let e = EMOJI[(i / args.channels) as usize % EMOJI.len()];
        calls.push((
            Method::PUT,
            format!("{base}/channels/{c}/messages/{m}/reactions/{e}/@me"),
            String::new(),
        ));
    }

    let start = Instant::now();
    let tasks: Vec<_> = calls
        .into_iter()
        .map(|(method, url, body)| {
            let req = Request::builder()
                .method(method)
                .uri(url)
                .header("authorization", format!("Bot {token}"))
                .header(
                    "user-agent",
                    "DiscordBot (https://github.com/ratelimit-rs/ratelimit, 0.1)",
                )
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)));
            let client = client.clone();
            tokio::spawn(async move {
                let req = req.map_err(|e| e.to_string())?;
                let res = client.oneshot(req).await.map_err(|e| e.to_string())?;
                let status = res.status();
                let retries = Attempts::of(res.extensions()).attempts - 1;
                let scope = res
                    .headers()
                    .get("x-ratelimit-scope")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("none")
                    .to_owned();
                // Drain the body so the connection is reused.
                let _ = res.into_body().collect().await;
                Ok::<_, String>((status, scope, retries))
            })
        })
        .collect();
    let total = tasks.len();
    let mut by_status: BTreeMap<u16, u64> = BTreeMap::new();
    let mut limited_by_scope: BTreeMap<String, u64> = BTreeMap::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let mut retries = 0u64;
    for t in tasks {
        match t.await {
            Ok(Ok((status, scope, r))) => {
                retries += u64::from(r);
                *by_status.entry(status.as_u16()).or_default() += 1;
                if status == StatusCode::TOO_MANY_REQUESTS {
                    *limited_by_scope.entry(scope).or_default() += 1;
                }
            }
            // Grouped by message with its figures masked: a ban's countdown differs for every request.
            Ok(Err(e)) => *errors.entry(without_figures(&e)).or_default() += 1,
            Err(e) => *errors.entry(e.to_string()).or_default() += 1,
        }
    }
    let elapsed = start.elapsed();
    let (waited, sent) = limiter.totals();
    let ok: u64 = by_status
        .iter()
        .filter(|(s, _)| (200..300).contains(*s))
        .map(|(_, n)| n)
        .sum();
    println!("operations       {total}");
    println!("requests sent    {sent} ({retries} of them retries)");
    println!("2xx              {ok}");
    println!("statuses         {by_status:?}");
    println!("429s returned    {limited_by_scope:?} (by X-RateLimit-Scope, after retries)");
    if !errors.is_empty() {
        println!("errors           {errors:?}");
    }
    println!(
        "total wait       {:.3} s (summed over requests)",
        waited.as_secs_f64()
    );
    println!("elapsed          {:.3} s", elapsed.as_secs_f64());
    let snap = limiter.snapshot();
    println!(
        "buckets learned  {}, routes {}, invalid requests {}",
        snap.buckets.len(),
        snap.routes.len(),
        snap.invalid_requests
    );
    if let Some(budget) = shared {
        let st = budget.stats();
        println!(
            "shared budget    {} Redis calls, {} failed, {} reservations decided alone",
            st.calls, st.errors, st.fallbacks
        );
    }
    Ok(())
}

/// `e` with each run of digits (and the points between them) written `#`.
fn without_figures(e: &str) -> String {
    let mut out = String::with_capacity(e.len());
    for c in e.chars() {
        let figure = c.is_ascii_digit() || (c == '.' && out.ends_with('#'));
        match (figure, out.ends_with('#')) {
            (true, true) => {}
            (true, false) => out.push('#'),
            (false, _) => out.push(c),
        }
    }
    out
}
