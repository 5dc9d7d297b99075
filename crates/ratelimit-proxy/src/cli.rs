//! The command line ([`Args`]), every flag with an environment fallback.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;

use crate::config::{ConfigError, ProxyConfig, Upstream};
use crate::shared::{Redis, SharedConfig};

/// `ratelimit-proxy`: a Discord REST proxy that holds each request until Discord's rate limits allow it.
///
/// ```
/// use clap::Parser;
/// use ratelimit_proxy::Args;
/// let args = Args::try_parse_from([
///     "ratelimit-proxy", "--listen", "127.0.0.1:0", "--max-wait", "5s", "--max-body", "1MiB",
/// ])?;
/// let config = args.into_config()?;
/// assert_eq!(config.max_body, 1024 * 1024);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Parser)]
#[command(name = "ratelimit-proxy", version, about, long_about = None)]
pub struct Args {
    /// Address bots connect to (port 0 picks a free one; the bound address is printed).
    #[arg(long, env = "RATELIMIT_PROXY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// The API root requests are forwarded to, path unchanged.
    #[arg(
        long,
        env = "RATELIMIT_PROXY_UPSTREAM",
        default_value = "https://discord.com/api"
    )]
    pub upstream: String,
    /// Address of the admin listener (`/metrics`, `/status`); none unless given.
    #[arg(long, env = "RATELIMIT_PROXY_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// Longest a request is held for the rate limit before a 503 (e.g. `30s`, `500ms`).
    #[arg(long, env = "RATELIMIT_PROXY_MAX_WAIT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub max_wait: Duration,
    /// Largest request body accepted before a 413 (e.g. `8MiB`, `512KiB`).
    #[arg(long, env = "RATELIMIT_PROXY_MAX_BODY", default_value = "8MiB", value_parser = parse_size)]
    pub max_body: usize,
    /// Longest the upstream may take to answer before a 504.
    #[arg(long, env = "RATELIMIT_PROXY_UPSTREAM_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub upstream_timeout: Duration,
    /// How long shutdown waits for requests in flight.
    #[arg(long, env = "RATELIMIT_PROXY_DRAIN_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub drain_timeout: Duration,
    /// Requests per token per global window under Discord's global limit (50 a second unless Discord
    /// raised yours).
    #[arg(long, env = "RATELIMIT_PROXY_GLOBAL_LIMIT", default_value_t = crate::config::DEFAULT_GLOBAL_LIMIT)]
    pub global_limit: u32,
    /// The global limit's window: Discord's is one second; other values serve simulators and tests.
    #[arg(long, env = "RATELIMIT_PROXY_GLOBAL_WINDOW", default_value = "1s", value_parser = humantime::parse_duration)]
    pub global_window: Duration,
    /// Redis holding the budget shared by every replica with the same namespace (e.g.
    /// `redis://10.0.0.5:6379/`). Must answer at start (the proxy does not start without it), unless
    /// --start-without-redis.
    #[arg(long, env = "REDIS_URL", conflicts_with = "redis_cluster")]
    pub redis_url: Option<String>,
    /// A Redis Cluster instead, through any of its nodes (comma-separated `redis://` URLs).
    #[arg(long, env = "RATELIMIT_PROXY_REDIS_CLUSTER", value_delimiter = ',')]
    pub redis_cluster: Option<Vec<String>>,
    /// Replicas share a budget exactly when they share this namespace: one per egress IP.
    #[arg(long, env = "RATELIMIT_PROXY_NAMESPACE", default_value = crate::shared::DEFAULT_NAMESPACE)]
    pub namespace: String,
    /// How many replicas share the budget: while Redis is unreachable each keeps the global limit
    /// divided by this.
    #[arg(long, env = "RATELIMIT_PROXY_INSTANCES", default_value_t = 1)]
    pub instances: u32,
    /// For a `rediss://` URL: the CA (PEM) that signed the server's certificate, when it is not one of the
    /// public roots built in.
    #[arg(long, env = "RATELIMIT_PROXY_REDIS_CA")]
    pub redis_ca: Option<std::path::PathBuf>,
    /// Start even when Redis does not answer yet (refused, unreachable, timed out): the replica limits
    /// itself, with the global limit divided by --instances, and joins the shared budget once Redis
    /// answers. A Redis that answers and refuses (password, ACL) still stops the start.
    #[arg(long, env = "RATELIMIT_PROXY_START_WITHOUT_REDIS")]
    pub start_without_redis: bool,
}

fn parse_size(s: &str) -> Result<usize, String> {
    let size: bytesize::ByteSize = s.parse()?;
    usize::try_from(size.as_u64()).map_err(|_| format!("{s} does not fit in memory"))
}

impl Args {
    /// The validated configuration.
    pub fn into_config(self) -> Result<ProxyConfig, ConfigError> {
        let mut config = ProxyConfig::new(self.listen, Upstream::parse(&self.upstream)?);
        config.admin_listen = self.admin_listen;
        config.max_wait = self.max_wait;
        config.max_body = self.max_body;
        config.upstream_timeout = self.upstream_timeout;
        config.drain_timeout = self.drain_timeout;
        config.global_limit = self.global_limit;
        config.global_window = self.global_window;
        config.shared = self.shared();
        config.validate()?;
        Ok(config)
    }
}

impl Args {
    fn shared(&self) -> Option<SharedConfig> {
        let redis = match (&self.redis_url, &self.redis_cluster) {
            (Some(url), _) => Redis::Url(url.clone()),
            (None, Some(nodes)) => Redis::Cluster(nodes.clone()),
            (None, None) => return None,
        };
        let mut shared = SharedConfig::new(redis);
        shared.namespace.clone_from(&self.namespace);
        shared.instances = self.instances;
        shared.redis_ca.clone_from(&self.redis_ca);
        shared.wait_for_redis = !self.start_without_redis;
        Some(shared)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_read_as_people_write_them() {
        assert_eq!(parse_size("8MiB"), Ok(8 * 1024 * 1024));
        assert_eq!(parse_size("512 KiB"), Ok(512 * 1024));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("lots").is_err());
        let a = Args::try_parse_from(["p", "--max-wait", "1m 30s"]).unwrap();
        assert_eq!(a.max_wait, Duration::from_secs(90));
        assert!(Args::try_parse_from(["p", "--max-body", "0"])
            .unwrap()
            .into_config()
            .is_err());
    }

    #[test]
    fn redis_flags_make_a_shared_budget() {
        let parse = |args: &[&str]| {
            let mut all = vec!["p"];
            all.extend_from_slice(args);
            Args::try_parse_from(all)
        };
        let one = parse(&["--redis-url", "redis://r:6379/", "--instances", "3"])
            .unwrap()
            .into_config()
            .unwrap()
            .shared
            .unwrap();
        assert_eq!(one.redis, Redis::Url("redis://r:6379/".into()));
        assert_eq!(
            (one.namespace.as_str(), one.instances),
            ("ratelimit-proxy", 3)
        );
        let cluster = parse(&[
            "--redis-cluster",
            "redis://a:1,redis://b:2",
            "--namespace",
            "bot",
        ])
        .unwrap()
        .into_config()
        .unwrap()
        .shared
        .unwrap();
        assert_eq!(
            cluster.redis,
            Redis::Cluster(vec!["redis://a:1".into(), "redis://b:2".into()])
        );
        assert!(parse(&["--redis-url", "redis://a", "--redis-cluster", "redis://b"]).is_err());
        let zero = parse(&["--redis-url", "redis://a", "--instances", "0"]).unwrap();
        assert_eq!(zero.into_config(), Err(ConfigError::Zero("instances")));
    }
}
