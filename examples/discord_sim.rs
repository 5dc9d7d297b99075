//! A fake Discord REST API on loopback, to try a Discord client without a Discord account.
//!
//! ```text
//! cargo run --example discord_sim -- --addr 127.0.0.1:8787 --scenario mixed
//! ```
//!
//! prints the base URL, the token it accepts and the scenario's limits, then serves until Ctrl-C (or
//! `--duration SECS`) and prints what it saw: requests, 2xx, 429s by scope, invalid requests, bans, and
//! the utilisation of every bucket. Point a client at it, for example:
//!
//! ```text
//! DISCORD_API_BASE=http://127.0.0.1:8787/api/v10 DISCORD_TOKEN=sim-token \
//!     cargo run --example discord_client -- --channels 10 --messages 200 --reactions 100
//! ```
//!
//! `--demo fire-all|serial` instead runs one of the bundled reference clients (everything at once, or one
//! request in flight per bucket) through the scenario's operations and exits.
//!
//! Options: `--addr ADDR` (loopback only; default `127.0.0.1:8787`), `--scenario mixed|parallel|sublimit|
//! layered|discord` (`discord` = the real route table at real timings), `--scale F` (multiply every window
//! and latency), `--seed N`, `--duration SECS`, `--demo fire-all|serial`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use discord_sim::{reference, Scenario, SimConfig, SimStats, Simulator, DEFAULT_TOKEN};

struct Args {
    addr: SocketAddr,
    scenario: String,
    scale: Option<f64>,
    seed: Option<u64>,
    duration: Option<Duration>,
    demo: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 8787)),
        scenario: "mixed".to_owned(),
        scale: None,
        seed: None,
        duration: None,
        demo: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => {
                let v = value()?;
                args.addr = v.parse().map_err(|e| format!("--addr {v}: {e}"))?;
            }
            "--scenario" => args.scenario = value()?,
            "--scale" => {
                let v = value()?;
                let f: f64 = v.parse().map_err(|e| format!("--scale {v}: {e}"))?;
                if !(f.is_finite() && f > 0.0) {
                    return Err(format!("--scale {v}: must be a positive number"));
                }
                args.scale = Some(f);
            }
            "--seed" => {
                let v = value()?;
                args.seed = Some(v.parse().map_err(|e| format!("--seed {v}: {e}"))?);
            }
            "--duration" => {
                let v = value()?;
                let s: f64 = v.parse().map_err(|e| format!("--duration {v}: {e}"))?;
                args.duration = Some(
                    Duration::try_from_secs_f64(s).map_err(|e| format!("--duration {v}: {e}"))?,
                );
            }
            "--demo" => args.demo = Some(value()?),
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown option {other}")),
        }
    }
    if !args.addr.ip().is_loopback() {
        return Err(format!(
            "--addr {}: the simulator only binds loopback addresses (127.0.0.0/8, ::1)",
            args.addr
        ));
    }
    Ok(args)
}

fn usage() {
    eprintln!(
        "usage: discord_sim [--addr 127.0.0.1:8787] [--scenario mixed|parallel|sublimit|layered|discord]\n\
         \x20                  [--scale F] [--seed N] [--duration SECS] [--demo fire-all|serial]"
    );
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("error: {e}");
            }
            usage();
            return if e.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    let mut scenario = if args.scenario == "discord" {
        Scenario {
            name: "discord",
            description: "Discord's observed route table at real timings (no operations)",
            config: SimConfig::default(),
            operations: Vec::new(),
        }
    } else if let Some(s) = Scenario::by_name(&args.scenario) {
        s
    } else {
        eprintln!("error: unknown scenario {:?}", args.scenario);
        usage();
        return ExitCode::from(2);
    };
    if let Some(f) = args.scale {
        scenario.config = scenario.config.scaled(f);
    }
    if let Some(seed) = args.seed {
        scenario.config.seed = seed;
    }

    let sim = match Simulator::bind(scenario.config.clone(), args.addr).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: cannot bind {}: {e}", args.addr);
            return ExitCode::FAILURE;
        }
    };
    let base = sim.base_url();
    println!("discord-sim listening: {base}");
    println!("token: Authorization: Bot {DEFAULT_TOKEN}");
    println!("scenario {}: {}", scenario.name, scenario.description);
    describe(&scenario);

    match args.demo.as_deref() {
        Some(demo) => {
            let report = match demo {
                "fire-all" => reference::fire_all(&base, DEFAULT_TOKEN, &scenario.operations).await,
                "serial" => {
                    reference::serial_per_bucket(
                        &base,
                        DEFAULT_TOKEN,
                        &scenario.operations,
                        scenario.config.global,
                    )
                    .await
                }
                other => {
                    eprintln!("error: unknown demo {other:?} (fire-all, serial)");
                    return ExitCode::from(2);
                }
            };
            println!(
                "\n{demo}: {} operations in {:.3} s (lower bound {:.3} s, {:.3} s learning resets from responses): \
                 {} requests, {} ok, {} failed, {} 429s",
                scenario.operations.len(),
                report.elapsed.as_secs_f64(),
                scenario.lower_bound().as_secs_f64(),
                scenario.lower_bound_reactive().as_secs_f64(),
                report.requests,
                report.succeeded,
                report.failed,
                report.rate_limited
            );
        }
        None => {
            println!(
                "\ntry: DISCORD_API_BASE={base} DISCORD_TOKEN={DEFAULT_TOKEN} \
                 cargo run --example discord_client -- --channels 10 --messages 200 --reactions 100"
            );
            println!(
                "serving until Ctrl-C{}",
                args.duration
                    .map_or(String::new(), |d| format!(" or {d:?}"))
            );
            match args.duration {
                Some(d) => {
                    tokio::select! {
                        _ = tokio::time::sleep(d) => {}
                        _ = tokio::signal::ctrl_c() => {}
                    }
                }
                None => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    print_stats(&sim.stats());
    sim.shutdown().await;
    ExitCode::SUCCESS
}

fn describe(scenario: &Scenario) {
    let c = &scenario.config;
    for r in &c.routes {
        let limit = r.limit.map_or("no bucket".to_owned(), |l| {
            format!("{} per {:?} {:?}", l.limit, l.period, l.window).to_lowercase()
        });
        let mut extra = Vec::new();
        if r.counter == discord_sim::CounterMode::SharedByHash {
            extra.push("hash-shared counter".to_owned());
        }
        if !r.per_major {
            extra.push("across majors".to_owned());
        }
        for l in &r.layers {
            extra.push(format!(
                "hidden layer {} per {:?}",
                l.limit.limit, l.limit.period
            ));
        }
        if let Some(s) = &r.sub_limit {
            extra.push(format!(
                "sub-limit {} per {:?} on {:?}",
                s.limit.limit, s.limit.period, s.body_fields
            ));
        }
        if let Some(s) = &r.shared {
            extra.push(format!(
                "shared storms {:?} for {:?}",
                s.trigger, s.duration
            ));
        }
        if r.exempt_global {
            extra.push("global-exempt".to_owned());
        }
        println!(
            "  {:6} {:58} {:28} {}",
            r.method.as_str(),
            r.template,
            limit,
            extra.join(", ")
        );
    }
    if let Some(g) = c.global {
        println!("  global: {} per {:?} per token", g.limit, g.period);
    }
    if let Some(b) = c.ban {
        println!(
            "  ban: {} invalid requests within {:?} -> {:?}",
            b.threshold, b.window, b.duration
        );
    }
    println!("  latency: {:?}, seed {}", c.latency, c.seed);
    if !scenario.operations.is_empty() {
        println!(
            "  {} operations; lower bound to finish them: {:.3} s",
            scenario.operations.len(),
            scenario.lower_bound().as_secs_f64()
        );
    }
}

fn print_stats(s: &SimStats) {
    println!(
        "\nsimulator saw {} requests: {} 2xx; 429s: {} user, {} sub-limit, {} global, {} shared, {} banned; \
         {} 401, {} 403, {} 404; {} invalid, {} bans",
        s.requests,
        s.success,
        s.user_429,
        s.sub_limit_429,
        s.global_429,
        s.shared_429,
        s.cloudflare_429,
        s.unauthorized,
        s.forbidden,
        s.not_found,
        s.invalid_requests,
        s.bans
    );
    for b in s.buckets.iter().chain(&s.global) {
        if b.admitted.is_empty() {
            continue;
        }
        println!(
            "  {:52} {:22} admitted {:4} in {:7.3} s  utilisation {:5.1} %  window fill {:5.1} %  efficiency {:5.1} %  rejected {}",
            b.name,
            b.major,
            b.admitted.len(),
            b.span().as_secs_f64(),
            100.0 * b.utilisation(),
            100.0 * b.window_fill(),
            100.0 * b.efficiency(),
            b.rejected
        );
    }
}
