//! `ratelimit-proxy` replicas as real processes (the built binary), for the tests and the replicas bench:
//! each is started on free loopback ports, found by the `listening on ADDR` lines it prints, and killed
//! when dropped.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a replica may take to print where it listens (a cold start on a loaded machine).
const START_WITHIN: Duration = Duration::from_secs(30);

/// The binary under test.
pub const BINARY: &str = env!("CARGO_BIN_EXE_ratelimit-proxy");

/// Settings read from the environment that a replica must not inherit from whoever runs the tests.
const INHERITED_SETTINGS: [&str; 6] = [
    "REDIS_URL",
    "RATELIMIT_PROXY_REDIS_CLUSTER",
    "RATELIMIT_PROXY_NAMESPACE",
    "RATELIMIT_PROXY_INSTANCES",
    "RATELIMIT_PROXY_GLOBAL_WINDOW",
    "RATELIMIT_PROXY_REDIS_CA",
];

/// One running replica.
pub struct Replica {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    child: Child,
}

/// The replica's command: loopback ports picked by the system, errors only (a 429 storm is a warning per
/// 429), `args` added.
pub fn command(upstream: &str, args: &[String]) -> Command {
    let mut cmd = Command::new(BINARY);
    cmd.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .args(["--upstream", upstream])
        .args(args)
        .env("RUST_LOG", "error")
        .kill_on_drop(true);
    for name in INHERITED_SETTINGS {
        cmd.env_remove(name);
    }
    cmd
}

impl Replica {
    /// Starts a replica in front of `upstream` (`http://host:port/api`) and waits until it listens.
    pub async fn start(upstream: &str, args: &[String]) -> Replica {
        let mut child = command(upstream, args)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut next = async || {
            let line = tokio::time::timeout(START_WITHIN, lines.next_line())
                .await
                .expect("the replica printed nothing in time")
                .unwrap()
                .expect("the replica exited before listening (its stderr says why)");
            line.rsplit(' ')
                .next()
                .unwrap()
                .parse::<SocketAddr>()
                .unwrap()
        };
        let addr = next().await;
        let admin = next().await;
        Replica { addr, admin, child }
    }

    /// The API root bots use.
    pub fn base(&self) -> String {
        format!("http://{}/api/v10", self.addr)
    }

    /// Stops it with SIGTERM and waits for it to exit.
    pub async fn stop(mut self) -> ExitStatus {
        let pid = self.child.id().unwrap().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status().await;
        tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .expect("no exit after SIGTERM")
            .unwrap()
    }
}

/// The flags that make a replica one of `instances` sharing `redis` under `namespace`.
pub fn shared_flags(redis: &str, namespace: &str, instances: usize) -> Vec<String> {
    [
        "--redis-url",
        redis,
        "--namespace",
        namespace,
        "--instances",
        &instances.to_string(),
    ]
    .map(str::to_owned)
    .to_vec()
}

/// The flags that give a replica the simulator's global limit.
pub fn global_flags(limit: u32, window: Duration) -> Vec<String> {
    vec![
        "--global-limit".into(),
        limit.to_string(),
        "--global-window".into(),
        format!("{}ms", window.as_millis()),
    ]
}
