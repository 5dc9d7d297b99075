//! The Redis store over TLS (`rediss://`): a `redis-server` with a TLS port and a certificate from a test CA
//! (made here with the `openssl` command), reached through redis-rs's rustls support, which the
//! application enables (this crate forces no TLS stack on anyone). The store decides exactly as over plain
//! TCP, and a client that does not trust the CA is refused: the connection really is TLS.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use ratelimit_core::{Policy, PolicySet, Quota, RedisStore, Store};
use ratelimit_test_support::tls::TlsRedis;
use redis::aio::ConnectionManager;
use redis::TlsCertificates;

#[tokio::test]
async fn rediss_decides_as_over_tcp_and_refuses_an_untrusted_certificate() {
    let tls = TlsRedis::start("core");
    let url = tls.url.clone();

    // Trusting the test CA: the store works, with the same decisions as anywhere else.
    let client = redis::Client::build_with_tls(
        url.as_str(),
        TlsCertificates {
            client_tls: None,
            root_cert: Some(tls.ca()),
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
}
