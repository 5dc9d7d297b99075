//! `X-Forwarded-For` / RFC 7239 `Forwarded` parsing and the right-to-left client resolution of
//! ratelimit-tower: arbitrary header bytes never panic, and the client chosen is always the TCP peer or an
//! address that appears in the header.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use ratelimit_tower::key::forwarded::{normalize, ForwardedChain, Hop, TrustedProxies};

fuzz_target!(|data: &[u8]| {
    let Some((&selector, header)) = data.split_first() else {
        return;
    };
    // Several field lines, as a client or a chain of proxies may send.
    let lines: Vec<&[u8]> = header.split(|&b| b == b'\n').collect();
    let chain = if selector & 1 == 0 {
        ForwardedChain::from_x_forwarded_for(lines.iter().copied())
    } else {
        ForwardedChain::from_forwarded(lines.iter().copied())
    };
    assert!(chain.iter_rev().count() <= chain.total());
    let peers: [IpAddr; 3] = [
        "10.0.0.1".parse().unwrap(),
        "203.0.113.9".parse().unwrap(),
        "::ffff:10.0.0.2".parse().unwrap(),
    ];
    let peer = peers[usize::from(selector >> 1) % peers.len()];
    let proxies = [
        TrustedProxies::None,
        TrustedProxies::cidrs(["10.0.0.0/8", "fd00::/8"]).unwrap(),
        TrustedProxies::Hops(usize::from(selector >> 4)),
    ];
    for p in &proxies {
        let client = p.resolve(peer, &chain);
        let from_chain = chain.iter_rev().any(|h| h == Hop::Addr(client));
        assert!(client == normalize(peer) || from_chain, "{client} is neither the peer nor in the chain");
        if !p.trusts(peer) && !matches!(p, TrustedProxies::Hops(_)) {
            assert_eq!(client, normalize(peer), "an untrusted peer's headers were believed");
        }
    }
});
