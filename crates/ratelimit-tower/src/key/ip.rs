//! Client-IP keys.

use std::cell::Cell;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

use http::header::{HeaderName, FORWARDED};

use super::forwarded::{self, Cidr, ForwardedChain, ProxyRangeError, TrustedProxies};
use super::{tag, KeyBuf, KeyError, KeyExtractor, RequestInfo};

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
///   they show up anyway, a warning is logged: you are probably behind a proxy, and every client shares
///   that proxy's bucket until you configure [`ClientIp::trusted_proxies`].
/// * [`ClientIp::trusted_proxies`] / [`ClientIp::behind`]: behind proxies, the right-most untrusted hop
///   (see [`TrustedProxies::resolve`]). Headers from a peer that is not a trusted proxy are ignored, so
///   clients cannot pick their key by sending `X-Forwarded-For` themselves; they are logged too (that
///   peer may be a proxy missing from the list, whose clients then share its bucket). A network that
///   would trust clients (`0.0.0.0/0`, `::/0`, a public range wider than one organisation's) is refused
///   ([`ProxyRangeError`]); [`ClientIp::behind_any_proxy_unsafe`] says "every peer is my proxy" instead.
///
/// Forwarding headers from a peer they are not believed from are looked for on every one of the first
/// 4096 requests a `ClientIp` keys by the peer, then on one request in 64, and counted in
/// `ratelimit_forwarded_ignored_total` (label `peer` = `no_proxy_trusted` or `untrusted`) when found. The
/// first 8 found are each logged at `warn`, then at most one line a minute with the count, per `ClientIp`.
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
    forwarded_ignored: LogBudget,
    /// Requests looked at for forwarding headers so far, up to [`FORWARDING_CHECKED_IN_FULL`].
    forwarding_checked: AtomicU64,
}

/// Every one of the first this many requests keyed by the peer is looked at for forwarding headers: a
/// proxy missing from the configuration adds them to every request, so it shows at once, and so does a
/// client forging them early on.
const FORWARDING_CHECKED_IN_FULL: u64 = 4096;

/// After those, one request in this many (per thread) is: the two header look-ups (one of a custom name,
/// hashed byte by byte) would otherwise be the costliest part of a peer key on every request.
const FORWARDING_CHECK_EVERY: u32 = 64;

thread_local! {
    static FORWARDING_CHECK_TICK: Cell<u32> = const { Cell::new(0) };
}

/// How many ignored forwarding headers are each logged in full (per [`ClientIp`]): enough to show the
/// peers involved; later ones are summed up at most once per [`FORWARDED_IGNORED_SUMMARY_SECS`].
const FORWARDED_IGNORED_LOGGED_IN_FULL: u64 = 8;

/// The least time between two summary lines about ignored forwarding headers.
const FORWARDED_IGNORED_SUMMARY_SECS: u64 = 60;

/// Why a request's forwarding header was not believed.
#[derive(Debug, Clone, Copy)]
enum Ignored {
    /// The layer trusts no proxy at all.
    NoProxyTrusted,
    /// The peer is not one of the trusted proxies.
    Untrusted,
}

impl Ignored {
    fn label(self) -> &'static str {
        match self {
            Ignored::NoProxyTrusted => "no_proxy_trusted",
            Ignored::Untrusted => "untrusted",
        }
    }
}

/// What a [`LogBudget`] allows for one occurrence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Logged {
    /// Log it: it is occurrence `n` of the first few.
    InFull { n: u64 },
    /// Log a summary: `total` so far.
    Summary { total: u64 },
    /// Count it only.
    Counted,
}

/// Logs the first occurrences of a condition in full, then at most one summary line per period; the
/// clock is passed in (whole seconds), so tests drive it.
#[derive(Debug, Default)]
struct LogBudget {
    seen: AtomicU64,
    /// When the last line was logged (seconds, [`process_secs`]).
    last_line_secs: AtomicU64,
}

impl LogBudget {
    fn hit(&self, in_full: u64, every_secs: u64, now_secs: impl FnOnce() -> u64) -> Logged {
        let n = self.seen.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        if n <= in_full {
            if n == in_full {
                self.last_line_secs.store(now_secs(), Ordering::Relaxed);
            }
            return Logged::InFull { n };
        }
        let now = now_secs();
        let last = self.last_line_secs.load(Ordering::Relaxed);
        // One thread per period wins the exchange and logs; the others only count.
        if now < last.saturating_add(every_secs)
            || self
                .last_line_secs
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return Logged::Counted;
        }
        Logged::Summary { total: n }
    }
}

/// Whole seconds since this process first asked (a monotonic clock for log budgets).
fn process_secs() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_secs()
}

impl Clone for ClientIp {
    fn clone(&self) -> Self {
        ClientIp {
            proxies: self.proxies.clone(),
            header: self.header,
            v4_prefix: self.v4_prefix,
            v6_prefix: self.v6_prefix,
            warned_no_peer: AtomicBool::new(false),
            forwarded_ignored: LogBudget::default(),
            forwarding_checked: AtomicU64::new(0),
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
            forwarded_ignored: LogBudget::default(),
            forwarding_checked: AtomicU64::new(0),
        }
    }

    /// The client behind `proxies`.
    pub fn trusted_proxies(proxies: TrustedProxies) -> Self {
        ClientIp {
            proxies,
            ..Self::peer()
        }
    }

    /// Shorthand for [`ClientIp::trusted_proxies`] with [`TrustedProxies::cidrs`]: refuses a network that
    /// does not parse or would trust clients (`0.0.0.0/0`, `::/0`, a public range wider than /8 or /16),
    /// saying why.
    ///
    /// ```
    /// use ratelimit_tower::key::ClientIp;
    ///
    /// assert!(ClientIp::behind(["10.0.0.0/8", "fd00::/8"]).is_ok());
    /// let err = ClientIp::behind(["0.0.0.0/0"]).unwrap_err().to_string();
    /// assert!(err.contains("any client could write its own X-Forwarded-For"), "{err}");
    /// ```
    pub fn behind<I, T>(cidrs: I) -> Result<Self, ProxyRangeError>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        Ok(Self::trusted_proxies(TrustedProxies::cidrs(cidrs)?))
    }

    /// Takes **every** TCP peer for a proxy of yours, and the client for the address that peer appended
    /// to the forwarding header (its right-most element; the peer itself when there is none):
    /// [`TrustedProxies::Hops`]`(1)`.
    ///
    /// Unsafe in the sense that matters here: a client that reaches this server without going through
    /// your proxy chooses its own key with every request, so the limit does not hold for it. Use it only
    /// when nothing but your proxies can connect (a private network, a firewall) and their addresses are
    /// not known in advance; otherwise list them with [`ClientIp::behind`]. Unlike trusting
    /// `0.0.0.0/0`, which would walk to the left-most element — the one the client wrote — this believes
    /// only the element your proxy appended.
    ///
    /// ```
    /// use ratelimit_tower::key::{ClientIp, TrustedProxies};
    ///
    /// let key = ClientIp::behind_any_proxy_unsafe();
    /// assert_eq!(key.proxies(), &TrustedProxies::Hops(1));
    /// ```
    pub fn behind_any_proxy_unsafe() -> Self {
        Self::trusted_proxies(TrustedProxies::Hops(1))
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
                self.note_forwarding_headers(req, peer, Ignored::NoProxyTrusted);
                Ok(peer)
            }
            TrustedProxies::Cidrs(networks) if !networks.contains(peer) => {
                self.note_forwarding_headers(req, peer, Ignored::Untrusted);
                Ok(peer)
            }
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

    /// Counts (and logs, within the budget) a forwarding header on a request whose peer it is not
    /// believed from. Two header look-ups per such request: a proxy that is missing from the list sends
    /// them on every request, a client forging them may send them on few, and both must show.
    #[inline]
    fn note_forwarding_headers(&self, req: &RequestInfo<'_>, peer: IpAddr, why: Ignored) {
        if !self.look_for_forwarding_headers() {
            return;
        }
        let headers = req.headers();
        if !(headers.contains_key(&X_FORWARDED_FOR) || headers.contains_key(FORWARDED)) {
            return;
        }
        self.forwarding_headers_ignored(peer, why);
    }

    /// Whether this request is looked at: every one of the first [`FORWARDING_CHECKED_IN_FULL`], then one
    /// in [`FORWARDING_CHECK_EVERY`] per thread. (Racing threads may look at a few more in full.)
    #[inline]
    fn look_for_forwarding_headers(&self) -> bool {
        if self.forwarding_checked.load(Ordering::Relaxed) < FORWARDING_CHECKED_IN_FULL {
            self.forwarding_checked.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        FORWARDING_CHECK_TICK.with(|t| {
            let n = t.get();
            t.set(n.wrapping_add(1));
            n % FORWARDING_CHECK_EVERY == 0
        })
    }

    #[cold]
    fn forwarding_headers_ignored(&self, peer: IpAddr, why: Ignored) {
        metrics::counter!("ratelimit_forwarded_ignored_total", "peer" => why.label()).increment(1);
        let logged = self.forwarded_ignored.hit(
            FORWARDED_IGNORED_LOGGED_IN_FULL,
            FORWARDED_IGNORED_SUMMARY_SECS,
            process_secs,
        );
        match (logged, why) {
            (Logged::Counted, _) => {}
            (Logged::InFull { n }, Ignored::NoProxyTrusted) => tracing::warn!(
                peer = %peer,
                n,
                "a request arrived with X-Forwarded-For/Forwarded but the rate limiter trusts no proxy, so it keys by the peer address: if this server is behind a proxy, every client shares the proxy's bucket — configure ClientIp::trusted_proxies (the first {FORWARDED_IGNORED_LOGGED_IN_FULL} are logged, then one line a minute; counted in ratelimit_forwarded_ignored_total)"
            ),
            (Logged::InFull { n }, Ignored::Untrusted) => tracing::warn!(
                peer = %peer,
                n,
                "a request with X-Forwarded-For/Forwarded came from a peer that is not a trusted proxy, so the header was ignored and the request keyed by the peer address: if this peer is your proxy, add its network to the trusted proxies (its clients share one bucket until then); if not, a client is forging the header or reaching the server around its proxies (the first {FORWARDED_IGNORED_LOGGED_IN_FULL} are logged, then one line a minute; counted in ratelimit_forwarded_ignored_total)"
            ),
            (Logged::Summary { total }, why) => tracing::warn!(
                last_peer = %peer,
                total,
                reason = why.label(),
                "forwarding headers ignored {total} times so far (peer not a trusted proxy): see the first warnings; counted in ratelimit_forwarded_ignored_total"
            ),
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
        IpAddr::V4(v4) => key.push(tag::IPV4, &v4.octets()),
        IpAddr::V6(v6) => key.push(tag::IPV6, &v6.octets()),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_requests_are_all_looked_at_then_one_in_64() {
        let key = ClientIp::peer();
        let first = (0..FORWARDING_CHECKED_IN_FULL)
            .filter(|_| key.look_for_forwarding_headers())
            .count();
        assert_eq!(first as u64, FORWARDING_CHECKED_IN_FULL);
        let later = (0..FORWARDING_CHECK_EVERY * 4)
            .filter(|_| key.look_for_forwarding_headers())
            .count();
        assert_eq!(later, 4);
        // A clone is a new key: its first requests are looked at again.
        assert!((0..8).all(|_| key.clone().look_for_forwarding_headers()));
    }

    #[test]
    fn a_log_budget_logs_the_first_in_full_then_one_summary_per_period() {
        let budget = LogBudget::default();
        let at = |secs: u64| budget.hit(3, 60, || secs);
        assert_eq!(at(0), Logged::InFull { n: 1 });
        assert_eq!(at(0), Logged::InFull { n: 2 });
        assert_eq!(at(5), Logged::InFull { n: 3 });
        // The period starts at the last full line.
        assert_eq!(at(6), Logged::Counted);
        assert_eq!(at(64), Logged::Counted);
        assert_eq!(at(65), Logged::Summary { total: 6 });
        assert_eq!(at(100), Logged::Counted);
        assert_eq!(at(125), Logged::Summary { total: 8 });
        assert_eq!(at(125), Logged::Counted);
    }
}
