//! A `redis-server` reached over TLS (`rediss://`): a test CA and a server certificate for 127.0.0.1 signed
//! by it, made with the `openssl` command in a directory removed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::redis_server::{free_port, RedisServer, START_ATTEMPTS};

/// A TLS `redis-server` and the CA that signed its certificate. Dropping it stops the server and removes
/// the certificates.
pub struct TlsRedis {
    /// The server (its plain TCP port stays open too, for `cli`).
    pub server: RedisServer,
    /// `rediss://127.0.0.1:<tls port>/`.
    pub url: String,
    dir: PathBuf,
}

impl TlsRedis {
    /// Makes the certificates and starts the server; `name` keeps concurrent tests' directories apart.
    pub fn start(name: &str) -> TlsRedis {
        let dir = std::env::temp_dir().join(format!("ratelimit-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        certificates(&dir);
        let path = |f: &str| dir.join(f).to_str().unwrap().to_owned();
        let (server, tls_port) = (0..START_ATTEMPTS)
            .find_map(|_| {
                // The TLS port is picked like the plain one and may be lost the same way.
                let tls_port = free_port().to_string();
                let server = RedisServer::try_start_with(&[
                    "--tls-port",
                    &tls_port,
                    "--tls-cert-file",
                    &path("server.crt"),
                    "--tls-key-file",
                    &path("server.key"),
                    "--tls-ca-cert-file",
                    &path("ca.crt"),
                    "--tls-auth-clients",
                    "no",
                ])?;
                Some((server, tls_port))
            })
            .expect("could not start a TLS redis-server on free ports");
        TlsRedis {
            server,
            url: format!("rediss://127.0.0.1:{tls_port}/"),
            dir,
        }
    }

    /// The CA's certificate file (PEM).
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }

    /// The CA's certificate (PEM).
    pub fn ca(&self) -> Vec<u8> {
        std::fs::read(self.ca_file()).unwrap()
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run openssl ({e}): install it (Debian: apt-get install openssl)")
        });
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a server certificate for 127.0.0.1 signed by it, in `dir`.
fn certificates(dir: &Path) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=rl-test-ca",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.ext",
            "-out",
            "server.crt",
        ],
    );
}
