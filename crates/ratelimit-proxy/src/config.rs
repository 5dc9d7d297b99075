//! The proxy's settings ([`ProxyConfig`]) and the upstream it forwards to ([`Upstream`]), validated when
//! built so that a bad value stops the proxy at start with a message naming it.

use std::net::SocketAddr;
use std::time::Duration;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::Uri;

use crate::shared::{Redis, SharedConfig};

/// Discord's own upload limit is larger, but every request body is held in memory until it is sent (so
/// that a 429 can be retried), so the default bounds that memory per request.
pub const DEFAULT_MAX_BODY_HELD_IN_MEMORY: usize = 8 * 1024 * 1024;
/// The longest a request is held for the rate limit before the proxy answers 503 (the client's default:
/// the request timeout most callers use).
pub const DEFAULT_MAX_WAIT: Duration =
    ratelimit_client::DEFAULT_MAX_WAIT_WITHIN_COMMON_REQUEST_TIMEOUTS;
/// The longest the upstream may take to send a response's head before the proxy answers 504.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a graceful shutdown lets requests in flight finish: one maximum wait and one upstream
/// timeout fit in it.
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(60);
/// Discord's global limit per token per second.
pub const DEFAULT_GLOBAL_LIMIT: u32 = 50;
/// Discord's global window.
pub const DEFAULT_GLOBAL_WINDOW: Duration = Duration::from_secs(1);

/// A setting the proxy cannot work with; the message says which and what it must be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The upstream URL is not an absolute `http` or `https` URL without query.
    #[error("--upstream `{url}` is not usable: {reason} (expected e.g. https://discord.com/api)")]
    Upstream {
        /// The value given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A size or duration that must be positive is zero.
    #[error("{0} must be greater than zero")]
    Zero(&'static str),
    /// The limiter handed to the proxy would turn the upstream's last 429 into an error.
    #[error("the limiter must be built with `on_exhausted(Exhausted::Respond)` so that the upstream's last 429 reaches the bot intact (start from `Proxy::limiter_builder`)")]
    LimiterExhausted,
    /// The limiter could not be built.
    #[error(transparent)]
    Limiter(#[from] ratelimit_client::ConfigError),
    /// A shared budget is configured, which needs a connection to Redis before the proxy is built.
    #[error("the configuration names a shared budget (`shared`): build the proxy with `Proxy::connect`, which connects to Redis, or pass a limiter built with the budget and the budget itself (`Proxy::shared_budget`) and leave `shared` unset")]
    SharedNeedsConnect,
    /// The cluster node list is empty.
    #[error(
        "--redis-cluster names no node (expected e.g. redis://10.0.0.1:7000,redis://10.0.0.2:7000)"
    )]
    NoClusterNode,
}

/// Where requests go: the scheme and authority of the upstream, and the path under which the API lives.
///
/// Requests under the path are forwarded with their path and query unchanged (a bot using
/// `http://proxy:8080/api/v10` reaches `https://discord.com/api/v10`); requests outside it are refused
/// with 404, as they are not API calls.
///
/// ```
/// use ratelimit_proxy::Upstream;
/// let up = Upstream::parse("https://discord.com/api")?;
/// assert!(up.serves("/api/v10/gateway"));
/// assert!(!up.serves("/apiary"));
/// assert_eq!(up.authority().as_str(), "discord.com");
/// # Ok::<(), ratelimit_proxy::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    scheme: Scheme,
    authority: Authority,
    /// The API root without a trailing slash (empty for `/`).
    base: String,
}

impl Upstream {
    /// Parses an absolute `http` or `https` URL without query or fragment.
    pub fn parse(url: &str) -> Result<Upstream, ConfigError> {
        let bad = |reason| ConfigError::Upstream {
            url: url.to_owned(),
            reason,
        };
        let uri: Uri = url.parse().map_err(|_| bad("not a URL"))?;
        let scheme = uri.scheme().cloned().ok_or(bad("no scheme"))?;
        if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
            return Err(bad("the scheme must be http or https"));
        }
        let authority = uri.authority().cloned().ok_or(bad("no host"))?;
        if authority.as_str().contains('@') {
            return Err(bad("credentials in the URL are not supported"));
        }
        if uri.query().is_some() {
            return Err(bad("a query is not allowed"));
        }
        let base = uri.path().trim_end_matches('/').to_owned();
        Ok(Upstream {
            scheme,
            authority,
            base,
        })
    }

    /// The host (and port) requests are sent to; also the `Host` header they carry.
    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// Whether `path` is under the API root.
    pub fn serves(&self, path: &str) -> bool {
        match path.strip_prefix(self.base.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/'),
            None => false,
        }
    }

    /// The upstream URL of a request target.
    pub(crate) fn target(&self, path_and_query: PathAndQuery) -> Result<Uri, http::Error> {
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(path_and_query)
            .build()
    }
}

impl std::fmt::Display for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}{}", self.scheme, self.authority, self.base)
    }
}

/// The proxy's settings. [`ProxyConfig::new`] fills in the defaults; fields can then be changed.
///
/// ```
/// use std::time::Duration;
/// use ratelimit_proxy::{ProxyConfig, Upstream};
/// let mut config = ProxyConfig::new(
///     "127.0.0.1:0".parse()?,
///     Upstream::parse("https://discord.com/api")?,
/// );
/// config.max_wait = Duration::from_secs(5);
/// config.validate()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProxyConfig {
    /// Where bots connect (port 0 picks a free port; [`RunningProxy::addr`](crate::RunningProxy::addr)
    /// tells which).
    pub listen: SocketAddr,
    /// Where requests go.
    pub upstream: Upstream,
    /// Where `/metrics` and `/status` are served, if anywhere.
    pub admin_listen: Option<SocketAddr>,
    /// Longest a request is held for the rate limit; beyond it the bot gets 503 with `Retry-After`.
    pub max_wait: Duration,
    /// Largest request body accepted; beyond it the bot gets 413.
    pub max_body: usize,
    /// Longest the upstream may take to answer (its response head); beyond it the bot gets 504.
    pub upstream_timeout: Duration,
    /// How long a graceful shutdown waits for requests in flight before cutting them.
    pub drain_timeout: Duration,
    /// Requests per token per global window under the global limit.
    pub global_limit: u32,
    /// The global limit's window: Discord's is one second; other values serve simulators.
    pub global_window: Duration,
    /// The budget shared with other replicas through Redis, if any ([`Proxy::connect`](crate::Proxy::connect)
    /// connects to it).
    pub shared: Option<SharedConfig>,
}

impl ProxyConfig {
    /// The defaults for `listen` and `upstream`.
    pub fn new(listen: SocketAddr, upstream: Upstream) -> ProxyConfig {
        ProxyConfig {
            listen,
            upstream,
            admin_listen: None,
            max_wait: DEFAULT_MAX_WAIT,
            max_body: DEFAULT_MAX_BODY_HELD_IN_MEMORY,
            upstream_timeout: DEFAULT_UPSTREAM_TIMEOUT,
            drain_timeout: DEFAULT_DRAIN_TIMEOUT,
            global_limit: DEFAULT_GLOBAL_LIMIT,
            global_window: DEFAULT_GLOBAL_WINDOW,
            shared: None,
        }
    }

    /// Checks the values that must be positive, and that a cluster names a node.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_body == 0 {
            return Err(ConfigError::Zero("max_body"));
        }
        if self.upstream_timeout.is_zero() {
            return Err(ConfigError::Zero("upstream_timeout"));
        }
        if self.global_limit == 0 {
            return Err(ConfigError::Zero("global_limit"));
        }
        if self.global_window.is_zero() {
            return Err(ConfigError::Zero("global_window"));
        }
        self.validate_shared()
    }

    fn validate_shared(&self) -> Result<(), ConfigError> {
        let Some(shared) = &self.shared else {
            return Ok(());
        };
        if shared.instances == 0 {
            return Err(ConfigError::Zero("instances"));
        }
        if matches!(&shared.redis, Redis::Cluster(nodes) if nodes.is_empty()) {
            return Err(ConfigError::NoClusterNode);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_are_checked() {
        assert!(Upstream::parse("ftp://x/api").is_err());
        assert!(Upstream::parse("/api").is_err());
        assert!(Upstream::parse("https://u:p@discord.com/api").is_err());
        assert!(Upstream::parse("https://discord.com/api?x=1").is_err());
        let root = Upstream::parse("http://127.0.0.1:9/").unwrap();
        assert!(root.serves("/anything") && root.serves("/"));
        let api = Upstream::parse("https://discord.com/api/").unwrap();
        assert!(api.serves("/api") && api.serves("/api/v10/x") && !api.serves("/api2"));
        assert_eq!(api.to_string(), "https://discord.com/api");
    }
}
