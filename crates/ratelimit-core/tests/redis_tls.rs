//! The Redis store over TLS (`rediss://`): a `redis-server` with a TLS port and a certificate from a test CA
//! (made here with the `openssl` command), reached through redis-rs's rustls support, which the
//! application enables (this crate forces no TLS stack on anyone). The store decides exactly as over plain
//! TCP, and a client that does not trust the CA is refused: the connection really is TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use ratelimit_core::{Policy, PolicySet, Quota, RedisStore, Store};
use ratelimit_test_support::redis_server::{free_port, RedisServer};
use redis::aio::ConnectionManager;
use redis::TlsCertificates;

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

#[tokio::test]
async fn rediss_decides_as_over_tcp_and_refuses_an_untrusted_certificate() {
    let dir = std::env::temp_dir().join(format!("ratelimit-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    certificates(&dir);
    let path = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    let tls_port = free_port().to_string();
    let _server = RedisServer::start_with(&[
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
    ]);
    let url = format!("rediss://127.0.0.1:{tls_port}/");

    // Trusting the test CA: the store works, with the same decisions as anywhere else.
    let client = redis::Client::build_with_tls(
        url.as_str(),
        TlsCertificates {
            client_tls: None,
            root_cert: Some(std::fs::read(dir.join("ca.crt")).unwrap()),
        },
    )
    .unwrap();
    let manager = ConnectionManager::new(client).await.unwrap();
    let store = RedisStore::builder()
        .timeout(Duration::from_secs(2))
        .from_manager(manager)
        .await
        .unwrap();
    let set =
        PolicySet::new([Policy::gcra("g", Quota::per_hour(3).build().unwrap()).unwrap()]).unwrap();
    let mut allowed = 0;
    for _ in 0..5 {
        let d = Store::<str, PolicySet>::check(&store, &set, "tls-key", 1)
            .await
            .unwrap();
        allowed += usize::from(d.is_allowed());
    }
    assert_eq!(allowed, 3, "3 an hour over TLS");

    // Not trusting it (the system's roots only): the handshake fails, so nothing went in the clear.
    let refused = RedisStore::builder()
        .timeout(Duration::from_secs(2))
        .connect(&url)
        .await;
    assert!(
        refused.is_err(),
        "a certificate from an unknown CA was accepted"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
