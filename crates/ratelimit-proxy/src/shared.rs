//! Replicas sharing one budget: where the shared state lives ([`SharedConfig`]) and connecting to it.

use ratelimit_client::shared::{redis, SharedBudget, SharedError};

/// The namespace replicas use unless told otherwise: every proxy started with the same Redis and no
/// `--namespace` shares one budget.
pub const DEFAULT_NAMESPACE: &str = "ratelimit-proxy";

/// Where the shared state lives: one Redis server, or a Redis Cluster reached through any of its nodes.
///
/// Its `Debug` and `Display` hide credentials (`redis://***@host:6379/`), so configurations can be logged.
///
/// ```
/// use ratelimit_proxy::Redis;
/// let nodes = Redis::Cluster(vec!["redis://:pw@10.0.0.1:7000".into(), "redis://10.0.0.2:7000".into()]);
/// assert_eq!(nodes.flag(), "--redis-cluster");
/// assert_eq!(nodes.to_string(), "redis://***@10.0.0.1:7000,redis://10.0.0.2:7000");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub enum Redis {
    /// `redis://[user:password@]host:port/db` or `unix:///path` (`--redis-url`, `REDIS_URL`).
    Url(String),
    /// Cluster nodes, each a `redis://` URL (`--redis-cluster`).
    Cluster(Vec<String>),
}

impl Redis {
    /// The flag that set it, for messages that say what to change.
    pub fn flag(&self) -> &'static str {
        match self {
            Redis::Url(_) => "--redis-url",
            Redis::Cluster(_) => "--redis-cluster",
        }
    }
}

impl std::fmt::Display for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Redis::Url(url) => f.write_str(&without_credentials(url)),
            Redis::Cluster(nodes) => {
                let shown: Vec<String> = nodes.iter().map(|n| without_credentials(n)).collect();
                f.write_str(&shown.join(","))
            }
        }
    }
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redis({self})")
    }
}

/// A URL as it may be shown: the user and password replaced by `***`, the query (where redis-rs also
/// reads a password) by `?…`.
fn without_credentials(url: &str) -> String {
    let (url, had_query) = match url.split_once('?') {
        Some((u, _)) => (u, true),
        None => (url, false),
    };
    let shown = match url.split_once("://") {
        Some((scheme, rest)) => {
            let host_end = rest.find('/').unwrap_or(rest.len());
            match rest[..host_end].rfind('@') {
                Some(at) => format!("{scheme}://***{}", &rest[at..]),
                None => url.to_owned(),
            }
        }
        None => url.to_owned(),
    };
    if had_query {
        shown + "?…"
    } else {
        shown
    }
}

/// The shared budget of a set of replicas: where its state lives, the namespace they share and how many
/// they are.
///
/// ```
/// use ratelimit_proxy::{Redis, SharedConfig};
/// let mut shared = SharedConfig::new(Redis::Url("redis://:secret@10.0.0.5:6379/".into()));
/// shared.instances = 3;
/// assert_eq!(shared.redis.to_string(), "redis://***@10.0.0.5:6379/");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SharedConfig {
    /// Where the state lives.
    pub redis: Redis,
    /// Replicas share a budget exactly when they share a namespace: one per egress IP and its tokens.
    pub namespace: String,
    /// How many replicas share the budget: while Redis is unreachable each keeps the global limit divided
    /// by this.
    pub instances: u32,
    /// The CA that signed a `rediss://` server's certificate, when it is not a public one (PEM).
    pub redis_ca: Option<std::path::PathBuf>,
    /// Whether the proxy waits for Redis at start (default `true`; `--start-without-redis` sets it
    /// false): see [`SharedBudgetBuilder::wait_for_redis`](ratelimit_client::shared::SharedBudgetBuilder::wait_for_redis).
    pub wait_for_redis: bool,
}

/// The shared budget could not be set up; the proxy does not start without it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SharedStartError {
    /// Redis could not be reached, or the URL is not one.
    #[error("{flag} {redis}: {source}. The proxy does not start without the shared budget it was given: start Redis or correct {flag}, then start the proxy again (or pass --start-without-redis to start alone and join when Redis answers, or leave {flag} unset to limit this replica alone)")]
    Connect {
        /// The flag that named Redis.
        flag: &'static str,
        /// Where, credentials hidden.
        redis: String,
        /// Why.
        source: SharedError,
    },
    /// The namespace or the number of instances is out of range.
    #[error("--namespace / --instances: {0}")]
    Settings(SharedError),
}

impl SharedConfig {
    /// One replica (`instances` 1) in [`DEFAULT_NAMESPACE`].
    pub fn new(redis: Redis) -> SharedConfig {
        SharedConfig {
            redis,
            namespace: DEFAULT_NAMESPACE.to_owned(),
            instances: 1,
            redis_ca: None,
            wait_for_redis: true,
        }
    }

    /// A client for `url`: over TLS (`rediss://`) it trusts the Mozilla roots built in, or only
    /// [`redis_ca`](Self::redis_ca) when given.
    fn client(&self, url: &str) -> Result<redis::Client, SharedError> {
        install_crypto_provider();
        let client = match &self.redis_ca {
            None => redis::Client::open(url),
            Some(path) => {
                let ca = std::fs::read(path).map_err(|e| {
                    SharedError::Connect(redis::RedisError::from(std::io::Error::new(
                        e.kind(),
                        format!("--redis-ca {}: {e}", path.display()),
                    )))
                })?;
                redis::Client::build_with_tls(
                    url,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(ca),
                    },
                )
            }
        };
        client.map_err(SharedError::Connect)
    }

    /// Connects to Redis and loads the budget's script: fails if Redis cannot be reached now, unless
    /// [`wait_for_redis`](Self::wait_for_redis) is false.
    pub async fn connect(&self) -> Result<SharedBudget, SharedStartError> {
        let builder = SharedBudget::builder()
            .namespace(self.namespace.as_str())
            .instances(self.instances)
            .wait_for_redis(self.wait_for_redis);
        let connected = match &self.redis {
            Redis::Url(url) => match self.client(url) {
                Ok(client) => builder.from_client(client).await,
                Err(e) => Err(e),
            },
            Redis::Cluster(nodes) => {
                let nodes: Vec<&str> = nodes.iter().map(String::as_str).collect();
                builder.connect_cluster(&nodes).await
            }
        };
        connected.map_err(|e| match e {
            SharedError::Config(_) => SharedStartError::Settings(e),
            _ => SharedStartError::Connect {
                flag: self.redis.flag(),
                redis: self.redis.to_string(),
                source: e,
            },
        })
    }
}

/// redis-rs's TLS takes rustls's process-wide crypto provider: ring, as for the upstream.
fn install_crypto_provider() {
    // Already installed (by an earlier call, or by the application embedding the proxy): keep it.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_never_shown() {
        let shown = |u: &str| Redis::Url(u.to_owned()).to_string();
        assert_eq!(
            shown("redis://127.0.0.1:6379/0"),
            "redis://127.0.0.1:6379/0"
        );
        assert_eq!(shown("redis://u:p@h:1/2"), "redis://***@h:1/2");
        assert_eq!(shown("rediss://:p@w@h"), "rediss://***@h");
        assert_eq!(
            shown("unix:///run/redis.sock?pass=x"),
            "unix:///run/redis.sock?…"
        );
        let cluster = Redis::Cluster(vec!["redis://:p@a:1".into(), "redis://b:2".into()]);
        assert_eq!(format!("{cluster:?}"), "Redis(redis://***@a:1,redis://b:2)");
    }
}
