//! Throwaway `redis-server` processes for the Redis tests: a single node or a local 3-master cluster on
//! free loopback ports, no persistence, killed (and waited for) on drop. A missing `redis-server` fails the
//! test loudly; it is never skipped.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SERVER: &str = "redis-server";
const CLI: &str = "redis-cli";
/// Ports are picked free and then released, so a parallel test may take one first: try again elsewhere.
pub const START_ATTEMPTS: usize = 5;

/// A free loopback TCP port (bound, then released: good enough for tests on one machine).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn tmp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "ratelimit-redis-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// One `redis-server`.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: PathBuf,
    extra: Vec<String>,
}

impl RedisServer {
    /// Starts a server on a free loopback port and waits until it answers PING.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra `--flag value` arguments.
    pub fn start_with(extra: &[&str]) -> Self {
        (0..START_ATTEMPTS)
            .find_map(|_| Self::try_start_with(extra))
            .unwrap_or_else(|| {
                panic!(
                    "could not start redis-server on a free port after {START_ATTEMPTS} attempts"
                )
            })
    }

    /// One attempt on one free port: `None` when the server exits (a port it needs was taken) or does
    /// not answer in time.
    pub fn try_start_with(extra: &[&str]) -> Option<Self> {
        Self::try_start_on(free_port(), extra)
    }

    /// Starts a server on a given port (a test that starts Redis only after its client): `None` if the
    /// port is taken.
    pub fn try_start_on(port: u16, extra: &[&str]) -> Option<Self> {
        let mut s = RedisServer {
            port,
            child: None,
            dir: tmp_dir("node"),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        s.spawn().then_some(s)
    }

    fn spawn(&mut self) -> bool {
        let child = Command::new(SERVER)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {SERVER} ({e}): install it (Debian: apt-get install redis-server)"
                )
            });
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(5))
    }

    fn wait_ready(&mut self, limit: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < limit {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                // Exited (port taken by a parallel test?) and reaped: its pid may already belong to
                // another process, so nothing may signal it any more.
                self.child = None;
                return false;
            }
            if self.answering_pid() == self.child.as_ref().map(Child::id) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The pid of whatever server answers on this port: another test's server may hold the port
    /// this one failed to bind, and its PONG must not pass for ours.
    fn answering_pid(&self) -> Option<u32> {
        self.cli(&["INFO", "server"])
            .lines()
            .find_map(|l| l.strip_prefix("process_id:"))
            .and_then(|pid| pid.trim().parse().ok())
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("server not running").id()
    }

    /// Runs `redis-cli` against this server and returns its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(CLI)
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .stderr(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {CLI} ({e}): install redis-tools"));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// SIGSTOP: the server stays connected but answers nothing.
    pub fn pause(&self) {
        signal(self.pid(), "-STOP");
    }

    /// SIGCONT.
    pub fn resume(&self) {
        signal(self.pid(), "-CONT");
    }

    /// Kills the server (SIGKILL) and waits for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the server again on the same port (with an empty dataset and script cache).
    pub fn restart(&mut self) {
        self.kill();
        for _ in 0..50 {
            if self.spawn() {
                return;
            }
            self.kill();
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("could not restart redis-server on port {}", self.port);
    }
}

fn signal(pid: u32, sig: &str) {
    assert!(try_signal(pid, sig), "kill {sig} {pid} failed");
}

fn try_signal(pid: u32, sig: &str) -> bool {
    Command::new("kill")
        .args([sig, &pid.to_string()])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            // A paused server is woken so it dies cleanly; one that already exited needs nothing
            // (and a drop must not panic over it).
            if matches!(c.try_wait(), Ok(None)) {
                try_signal(c.id(), "-CONT");
            }
        }
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A local Redis Cluster of three masters, no replicas.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-config-file",
                    "nodes.conf",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = Command::new(CLI)
            .arg("--cluster")
            .arg("create")
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .expect("redis-cli --cluster create");
        assert!(
            out.status.success(),
            "cluster create failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let start = Instant::now();
        loop {
            let ok = nodes
                .iter()
                .all(|n| n.cli(&["CLUSTER", "INFO"]).contains("cluster_state:ok"));
            if ok {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "cluster never became ok"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        RedisCluster { nodes }
    }

    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.url()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A start that loses its port to another server (parallel tests pick ports the same way) must
    /// report failure, and dropping it must neither panic nor signal the reaped pid.
    #[test]
    fn a_start_on_a_taken_port_fails_quietly_and_drops_cleanly() {
        let holder = RedisServer::start();
        let mut loser = RedisServer {
            port: holder.port,
            child: None,
            dir: tmp_dir("loser"),
            extra: Vec::new(),
        };
        assert!(!loser.spawn(), "a second server bound a taken port");
        assert!(loser.child.is_none(), "the exited server is still tracked");
        drop(loser);
        assert_eq!(holder.cli(&["PING"]).trim(), "PONG");
    }
}
