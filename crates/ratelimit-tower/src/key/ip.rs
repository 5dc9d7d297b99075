//! Client-IP keys.

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};

use http::header::{HeaderName, FORWARDED};

use super::forwarded::{self, Cidr, CidrError, ForwardedChain, TrustedProxies};
use super::{KeyBuf, KeyError, KeyExtractor, RequestInfo};

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The TCP peer address, for servers that are not axum (hyper accept loops, tests): insert it as a request
/// extension. axum's `ConnectInfo<SocketAddr>` is read directly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// Which forwarding header trusted proxies write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For` (the default; what most load balancers write).
    #[default]
    XForwardedFor,
    /// RFC 7239 `Forwarded` (`for=` parameters).
    Forwarded,
}

/// Keys by client IP address.
///
/// * [`ClientIp::peer()`]: the TCP peer (the default key of the layer). Forwarding headers are ignored; if
///   they show up anyway, a warning is logged **once**: you are probably behind a proxy, and every client
///   shares that proxy's bucket until you configure [`ClientIp::trusted_proxies`].
/// * [`ClientIp::trusted_proxies`]: behind proxies, the right-most untrusted hop (see
///   [`TrustedProxies::resolve`]). Headers from a peer that is not a trusted proxy are ignored, so
///   clients cannot pick their key by sending `X-Forwarded-For` themselves.
///
/// IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is keyed as IPv4. IPv6 is keyed by its **/64** prefix by default
/// ([`ClientIp::ipv6_prefix`]): one subscriber usually gets a whole /64 and could otherwise rotate through
/// 2^64 fresh buckets.
///
/// A missing peer address (axum served without `into_make_service_with_connect_info`) is reported as
/// [`KeyError::NoPeerAddr`] with one error log line, not a bare 500 on every request.
///
/// ```
/// use ratelimit_tower::key::{ClientIp, ForwardedHeader, TrustedProxies};
///
/// let behind_lb = ClientIp::trusted_proxies(TrustedProxies::cidrs(["10.0.0.0/8", "fd00::/8"])?)
///     .header(ForwardedHeader::XForwardedFor)
///     .ipv6_prefix(56);
/// # let _ = behind_lb;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct ClientIp {
    proxies: TrustedProxies,
    header: ForwardedHeader,
    v4_prefix: u8,
    v6_prefix: u8,
    warned_no_peer: AtomicBool,
    warned_xff: AtomicBool,
}

/// One request in this many (per thread) is looked at for forwarding headers, to warn when a peer-keyed
/// layer sits behind a proxy. A proxy adds them to every request, so the warning still comes within the
/// first few dozen requests; looking up `x-forwarded-for` (a custom header name, hashed byte by byte) on
/// every request cost about 15 ns.
const FORWARDING_CHECK_EVERY: u32 = 64;

thread_local! {
    static FORWARDING_CHECK_TICK: Cell<u32> = const { Cell::new(0) };
}

/// Whether this request is one of those sampled by [`FORWARDING_CHECK_EVERY`] (the first on each thread
/// is).
#[inline]
fn sample_forwarding_check() -> bool {
    FORWARDING_CHECK_TICK.with(|t| {
        let n = t.get();
        t.set(n.wrapping_add(1));
        n % FORWARDING_CHECK_EVERY == 0
    })
}

impl Clone for ClientIp {
    fn clone(&self) -> Self {
        ClientIp {
            proxies: self.proxies.clone(),
            header: self.header,
            v4_prefix: self.v4_prefix,
            v6_prefix: self.v6_prefix,
            warned_no_peer: AtomicBool::new(false),
            warned_xff: AtomicBool::new(false),
        }
    }
}

impl Default for ClientIp {
    fn default() -> Self {
        Self::peer()
    }
}

impl ClientIp {
    /// The TCP peer address; forwarding headers ignored.
    pub fn peer() -> Self {
        ClientIp {
            proxies: TrustedProxies::None,
            header: ForwardedHeader::XForwardedFor,
            v4_prefix: 32,
            v6_prefix: 64,
            warned_no_peer: AtomicBool::new(false),
            warned_xff: AtomicBool::new(false),
        }
    }

    /// The client behind `proxies`.
    pub fn trusted_proxies(proxies: TrustedProxies) -> Self {
        ClientIp {
            proxies,
            ..Self::peer()
        }
    }

    /// Shorthand for [`ClientIp::trusted_proxies`] with [`TrustedProxies::cidrs`].
    pub fn behind<I, T>(cidrs: I) -> Result<Self, CidrError>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        Ok(Self::trusted_proxies(TrustedProxies::cidrs(cidrs)?))
    }

    /// Which forwarding header the trusted proxies write (default `X-Forwarded-For`).
    pub fn header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// Key IPv6 clients by this prefix length (default 64; 128 = per address; 0..=128, clamped).
    pub fn ipv6_prefix(mut self, bits: u8) -> Self {
        self.v6_prefix = bits.min(128);
        self
    }

    /// Key IPv4 clients by this prefix length (default 32 = per address; clamped to 0..=32).
    pub fn ipv4_prefix(mut self, bits: u8) -> Self {
        self.v4_prefix = bits.min(32);
        self
    }

    /// The trusted proxies.
    pub fn proxies(&self) -> &TrustedProxies {
        &self.proxies
    }

    /// The client address for `req` (unmasked), or why there is none.
    pub fn client_addr(&self, req: &RequestInfo<'_>) -> Result<IpAddr, KeyError> {
        let Some(peer) = req.peer_addr() else {
            if !self.warned_no_peer.swap(true, Ordering::Relaxed) {
                tracing::error!(
                    "rate limiter cannot see the client's address: {}; requests get the layer's on_key_error outcome (logged once)",
                    KeyError::NoPeerAddr
                );
            }
            return Err(KeyError::NoPeerAddr);
        };
        let peer = forwarded::normalize(peer.ip());
        match &self.proxies {
            p if p.is_none() => {
                if !self.warned_xff.load(Ordering::Relaxed)
                    && sample_forwarding_check()
                    && (req.headers().contains_key(&X_FORWARDED_FOR)
                        || req.headers().contains_key(FORWARDED))
                    && !self.warned_xff.swap(true, Ordering::Relaxed)
                {
                    tracing::warn!(
                        peer = %peer,
                        "a request arrived with X-Forwarded-For/Forwarded but the rate limiter trusts no proxy, so it keys by the peer address: if this server is behind a proxy, every client shares the proxy's bucket — configure ClientIp::trusted_proxies (logged once)"
                    );
                }
                Ok(peer)
            }
            TrustedProxies::Cidrs(_) if !self.proxies.trusts(peer) => Ok(peer),
            _ => {
                let lines = req.headers().get_all(match self.header {
                    ForwardedHeader::XForwardedFor => &X_FORWARDED_FOR,
                    ForwardedHeader::Forwarded => &FORWARDED,
                });
                let chain = match self.header {
                    ForwardedHeader::XForwardedFor => {
                        ForwardedChain::from_x_forwarded_for(lines.iter().map(|v| v.as_bytes()))
                    }
                    ForwardedHeader::Forwarded => {
                        ForwardedChain::from_forwarded(lines.iter().map(|v| v.as_bytes()))
                    }
                };
                Ok(self.proxies.resolve(peer, &chain))
            }
        }
    }

    /// The network the key stands for: the address masked to the configured prefix.
    pub fn key_network(&self, ip: IpAddr) -> Cidr {
        let prefix = match ip {
            IpAddr::V4(_) => self.v4_prefix,
            IpAddr::V6(_) => self.v6_prefix,
        };
        Cidr::new(ip, prefix)
    }
}

/// Writes a (masked) address as a key component.
pub(crate) fn push_ip(key: &mut KeyBuf, ip: IpAddr, v4_prefix: u8, v6_prefix: u8) {
    match forwarded::mask(ip, if ip.is_ipv4() { v4_prefix } else { v6_prefix }) {
        IpAddr::V4(v4) => key.push(b'4', &v4.octets()),
        IpAddr::V6(v6) => key.push(b'6', &v6.octets()),
    }
}

impl KeyExtractor for ClientIp {
    #[inline]
    fn extract(&self, req: &RequestInfo<'_>, key: &mut KeyBuf) -> Result<(), KeyError> {
        let ip = self.client_addr(req)?;
        push_ip(key, ip, self.v4_prefix, self.v6_prefix);
        Ok(())
    }
}
