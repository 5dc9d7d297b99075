//! Parsing `X-Forwarded-For` and RFC 7239 `Forwarded`, and picking the client address out of them.
//!
//! Both headers list the hops a request went through, client first: every proxy *appends* the address it
//! received the request from. Everything left of the element your own nearest proxy appended was written by
//! someone else — ultimately by the client, who can write anything. So the only safe reading is from the
//! **right**: start at the TCP peer, and while the current hop is a proxy you trust, step one element to the
//! left. The first address that is not a trusted proxy is the client ([`TrustedProxies::resolve`]).
//!
//! These are pure functions over header bytes so they can be tested and fuzzed on their own; hostile input
//! (garbage, `unknown`, obfuscated `_hidden` nodes, thousands of elements, megabytes of commas) never panics
//! and never reads more than the last [`MAX_HOPS`] elements' worth of state.
//!
//! ```
//! use std::net::IpAddr;
//! use ratelimit_tower::key::forwarded::{ForwardedChain, TrustedProxies};
//!
//! let proxies = TrustedProxies::cidrs(["10.0.0.0/8"])?;
//! let peer: IpAddr = "10.0.0.2".parse()?;
//! // The client wrote "6.6.6.6" itself; the load balancer appended the address it saw, 203.0.113.7.
//! let chain = ForwardedChain::from_x_forwarded_for([&b"6.6.6.6, 203.0.113.7"[..]]);
//! assert_eq!(proxies.resolve(peer, &chain), "203.0.113.7".parse::<IpAddr>()?);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// How many right-most elements of a forwarding header are kept. Longer chains are legal but no deployment
/// has this many trusted proxies; anything further left could only be reached by skipping 32 trusted hops.
pub const MAX_HOPS: usize = 32;

/// Longest element that is parsed as an address (an IPv6 address with zone and port is well under this).
const MAX_ELEMENT: usize = 64;

/// One element of a forwarding header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// A parseable address (IPv4-mapped IPv6 already normalised to IPv4).
    Addr(IpAddr),
    /// `unknown`, an obfuscated node (`_hidden`), or something that does not parse.
    Opaque,
}

/// The last [`MAX_HOPS`] elements of a forwarding header, in order (client-most first).
#[derive(Debug, Clone)]
pub struct ForwardedChain {
    ring: [Hop; MAX_HOPS],
    /// Elements seen in total (may exceed `MAX_HOPS`).
    seen: usize,
}

impl Default for ForwardedChain {
    fn default() -> Self {
        ForwardedChain {
            ring: [Hop::Opaque; MAX_HOPS],
            seen: 0,
        }
    }
}

impl ForwardedChain {
    fn push(&mut self, hop: Hop) {
        self.ring[self.seen % MAX_HOPS] = hop;
        self.seen = self.seen.saturating_add(1);
    }

    /// How many elements the header(s) held in total.
    pub fn total(&self) -> usize {
        self.seen
    }

    /// Whether no element was found.
    pub fn is_empty(&self) -> bool {
        self.seen == 0
    }

    /// Whether elements beyond the last [`MAX_HOPS`] were dropped.
    pub fn truncated(&self) -> bool {
        self.seen > MAX_HOPS
    }

    /// The kept elements from the right (nearest proxy first).
    pub fn iter_rev(&self) -> impl Iterator<Item = Hop> + '_ {
        let kept = self.seen.min(MAX_HOPS);
        (0..kept).map(move |i| self.ring[(self.seen - 1 - i) % MAX_HOPS])
    }

    /// Parses the field lines of `X-Forwarded-For`, in the order received (several lines form one list).
    pub fn from_x_forwarded_for<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut chain = ForwardedChain::default();
        for line in lines {
            for element in line.split(|&b| b == b',') {
                let element = trim(element);
                if element.is_empty() {
                    // "a,,b" or a trailing comma: not an element (lists may contain empty elements).
                    continue;
                }
                chain.push(parse_node(element));
            }
        }
        chain
    }

    /// Parses the field lines of RFC 7239 `Forwarded`, in the order received. Each element's `for=`
    /// parameter is the hop; an element without `for=` counts as an opaque hop (a proxy appended an element
    /// but did not say whom it heard from).
    pub fn from_forwarded<'a>(lines: impl IntoIterator<Item = &'a [u8]>) -> Self {
        let mut chain = ForwardedChain::default();
        for line in lines {
            for element in split_unquoted(line, b',') {
                if trim(element).is_empty() {
                    continue;
                }
                let mut hop = Hop::Opaque;
                for pair in split_unquoted(element, b';') {
                    let pair = trim(pair);
                    let Some(eq) = pair.iter().position(|&b| b == b'=') else {
                        continue;
                    };
                    let (name, value) = (trim(&pair[..eq]), trim(&pair[eq + 1..]));
                    if name.eq_ignore_ascii_case(b"for") {
                        hop = parse_node(unquote(value));
                    }
                }
                chain.push(hop);
            }
        }
        chain
    }
}

/// Splits on `sep` outside double-quoted strings (with `\` escapes inside them).
fn split_unquoted(input: &[u8], sep: u8) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(input);
    std::iter::from_fn(move || {
        let s = rest?;
        let mut quoted = false;
        let mut escaped = false;
        for (i, &b) in s.iter().enumerate() {
            if escaped {
                escaped = false;
            } else if quoted && b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                quoted = !quoted;
            } else if b == sep && !quoted {
                rest = Some(&s[i + 1..]);
                return Some(&s[..i]);
            }
        }
        rest = None;
        Some(s)
    })
}

fn trim(s: &[u8]) -> &[u8] {
    s.trim_ascii()
}

fn unquote(v: &[u8]) -> &[u8] {
    if v.len() >= 2 && v[0] == b'"' && v[v.len() - 1] == b'"' {
        &v[1..v.len() - 1]
    } else {
        v
    }
}

/// Parses a node: `1.2.3.4`, `1.2.3.4:80`, `2001:db8::1`, `[2001:db8::1]`, `[2001:db8::1]:443`.
fn parse_node(node: &[u8]) -> Hop {
    if node.len() > MAX_ELEMENT {
        return Hop::Opaque;
    }
    let Ok(s) = std::str::from_utf8(node) else {
        return Hop::Opaque;
    };
    let addr = if let Some(rest) = s.strip_prefix('[') {
        // [v6] or [v6]:port
        match rest.find(']') {
            Some(end) => {
                let tail = &rest[end + 1..];
                if !(tail.is_empty() || valid_port(tail)) {
                    return Hop::Opaque;
                }
                Ipv6Addr::from_str(&rest[..end]).ok().map(IpAddr::V6)
            }
            None => None,
        }
    } else if let Ok(ip) = IpAddr::from_str(s) {
        Some(ip)
    } else if let Some((host, port)) = s.rsplit_once(':') {
        // v4:port only — an unbracketed v6 with a port is ambiguous and not accepted.
        if valid_port(port) {
            Ipv4Addr::from_str(host).ok().map(IpAddr::V4)
        } else {
            None
        }
    } else {
        None
    };
    match addr {
        Some(ip) => Hop::Addr(normalize(ip)),
        None => Hop::Opaque,
    }
}

/// `:1234` (after a bracket) or `1234`; RFC 7239 also allows obfuscated ports (`:_abc`).
fn valid_port(p: &str) -> bool {
    let p = p.strip_prefix(':').unwrap_or(p);
    !p.is_empty()
        && p.len() <= 16
        && (p.bytes().all(|b| b.is_ascii_digit())
            || (p.starts_with('_')
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))))
}

/// Maps IPv4-mapped IPv6 (`::ffff:a.b.c.d`) to plain IPv4 so one client has one key whichever socket
/// family accepted it.
#[inline]
pub fn normalize(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// An IP network: an address and a prefix length (`10.0.0.0/8`, `2001:db8::/32`, or a single address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// A CIDR string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {0:?}: write an address with an optional prefix length, e.g. \"10.0.0.0/8\", \"192.0.2.7\" or \"2001:db8::/32\"")]
pub struct CidrError(pub String);

/// What to do instead of trusting a network that is not a proxy's: said by every [`ProxyRangeError`].
const PROXY_RANGE_FIX: &str = "list only your proxies' own networks, e.g. \"10.0.0.0/8\"; if this server can be reached only through proxies you run, say so with ClientIp::behind_any_proxy_unsafe() (trust_any_proxy = true in a configuration file)";

/// A trusted-proxy network that cannot be a proxy's: trusting it would believe the forwarding headers
/// that clients write themselves, so every forged `X-Forwarded-For` would get a fresh bucket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyRangeError {
    /// Not a network at all.
    #[error(transparent)]
    Syntax(#[from] CidrError),
    /// A network holding every address of its family (`0.0.0.0/0`, `::/0`).
    #[error("trusted proxy network {0} contains every address: any client could write its own X-Forwarded-For and get a fresh bucket per request; {PROXY_RANGE_FIX}")]
    Everything(Cidr),
    /// A public network wider than any one organisation's proxies (IPv4 wider than /8; IPv6 wider than
    /// /16, outside the private `fc00::/7` and `fe80::/10`).
    #[error("trusted proxy network {0} spans the public networks of many organisations (wider than /{WIDEST_PROXY_V4_PREFIX} for IPv4, /{WIDEST_PUBLIC_PROXY_V6_PREFIX} for public IPv6), so clients in it could forge X-Forwarded-For; {PROXY_RANGE_FIX}")]
    TooWide(Cidr),
}

/// The widest IPv4 network a proxy list may name. Any wider one spans at least two /8s, and every such
/// pair holds public addresses (the private /8s, 10 and 127, are not neighbours).
const WIDEST_PROXY_V4_PREFIX: u8 = 8;

/// The widest public IPv6 network a proxy list may name: a /16 is already a regional registry's share of
/// the address space, far more than one organisation's proxies.
const WIDEST_PUBLIC_PROXY_V6_PREFIX: u8 = 16;

/// IPv6 networks that are private however wide a part of them is named: unique-local and link-local.
const PRIVATE_V6: [(u128, u8); 2] = [
    (0xfc00_u128 << 112, 7),  // fc00::/7, unique local
    (0xfe80_u128 << 112, 10), // fe80::/10, link local
];

impl Cidr {
    /// Whether this network can hold trusted proxies: it does not contain every address and is not a
    /// public network wider than one organisation's ([`ProxyRangeError`] says why not).
    ///
    /// ```
    /// use ratelimit_tower::key::Cidr;
    ///
    /// assert!("10.0.0.0/8".parse::<Cidr>()?.check_proxy_range().is_ok());
    /// assert!("fd00::/8".parse::<Cidr>()?.check_proxy_range().is_ok());
    /// assert!("0.0.0.0/0".parse::<Cidr>()?.check_proxy_range().is_err());
    /// assert!("2000::/3".parse::<Cidr>()?.check_proxy_range().is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check_proxy_range(&self) -> Result<(), ProxyRangeError> {
        if self.prefix == 0 {
            return Err(ProxyRangeError::Everything(*self));
        }
        let too_wide = match self.addr {
            IpAddr::V4(_) => self.prefix < WIDEST_PROXY_V4_PREFIX,
            IpAddr::V6(v6) => {
                let private = PRIVATE_V6.iter().any(|&(net, bits)| {
                    self.prefix >= bits && mask(IpAddr::V6(v6), bits) == IpAddr::V6(net.into())
                });
                self.prefix < WIDEST_PUBLIC_PROXY_V6_PREFIX && !private
            }
        };
        if too_wide {
            return Err(ProxyRangeError::TooWide(*self));
        }
        Ok(())
    }
}

/// Writes `10.0.0.0/8`, `2001:db8::/32` (always with the prefix length), as [`Cidr`]'s `FromStr` reads it.
impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Cidr {
    /// A network from an address and a prefix length (masked; `prefix` capped at the family's width).
    pub fn new(addr: IpAddr, prefix: u8) -> Self {
        let addr = normalize(addr);
        let prefix = prefix.min(width(&addr));
        Cidr {
            addr: mask(addr, prefix),
            prefix,
        }
    }

    /// Whether `ip` lies in this network (IPv4-mapped IPv6 counts as IPv4).
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = normalize(ip);
        same_family(&ip, &self.addr) && mask(ip, self.prefix) == self.addr
    }
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, CidrError> {
        let err = || CidrError(s.to_owned());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s.trim(), None),
        };
        let addr = IpAddr::from_str(addr).map_err(|_| err())?;
        let prefix = match prefix {
            Some(p) => {
                let p: u8 = p.parse().map_err(|_| err())?;
                if p > width(&addr) {
                    return Err(err());
                }
                // "::ffff:10.0.0.0/104" is the IPv4 network 10.0.0.0/8.
                if let (IpAddr::V6(v6), true) = (addr, p >= 96) {
                    if v6.to_ipv4_mapped().is_some() {
                        return Ok(Cidr::new(addr, p - 96));
                    }
                }
                p
            }
            None => width(&addr),
        };
        Ok(Cidr::new(addr, prefix))
    }
}

fn width(ip: &IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

fn same_family(a: &IpAddr, b: &IpAddr) -> bool {
    a.is_ipv4() == b.is_ipv4()
}

/// Keeps the first `prefix` bits of `ip`.
#[inline]
pub fn mask(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix.min(32)))
            };
            IpAddr::V4(Ipv4Addr::from(bits & m))
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix.min(128)))
            };
            IpAddr::V6(Ipv6Addr::from(bits & m))
        }
    }
}

/// The networks of trusted proxies, each one checked by [`Cidr::check_proxy_range`]: none of them holds
/// every address, or a public network wider than one organisation's.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProxyNetworks(Vec<Cidr>);

impl ProxyNetworks {
    /// The networks, refusing the first that cannot hold proxies.
    pub fn new(networks: impl IntoIterator<Item = Cidr>) -> Result<Self, ProxyRangeError> {
        let networks: Vec<Cidr> = networks.into_iter().collect();
        for n in &networks {
            n.check_proxy_range()?;
        }
        Ok(ProxyNetworks(networks))
    }

    /// The networks, in the order given.
    pub fn as_slice(&self) -> &[Cidr] {
        &self.0
    }

    /// Whether `ip` lies in one of them.
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }
}

/// Which proxies may speak for the client.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum TrustedProxies {
    /// None: the TCP peer is the client, forwarding headers are ignored. The default, and the only safe
    /// choice when clients connect directly.
    #[default]
    None,
    /// Proxies whose addresses lie in these networks. The chain is walked right to left, skipping every
    /// trusted address; the first untrusted one is the client.
    Cidrs(ProxyNetworks),
    /// Exactly this many proxies stand in front of the server, each appending one element (the TCP peer
    /// is the first of them): the client is the element this many hops to the left of the peer.
    Hops(usize),
}

impl TrustedProxies {
    /// Trusted networks from strings like `"10.0.0.0/8"`; fails on the first one that does not parse or
    /// cannot hold proxies ([`Cidr::check_proxy_range`]: `0.0.0.0/0` would believe every client's own
    /// `X-Forwarded-For`).
    ///
    /// ```
    /// use ratelimit_tower::key::forwarded::{ProxyRangeError, TrustedProxies};
    ///
    /// assert!(TrustedProxies::cidrs(["10.0.0.0/8", "fd00::/8"]).is_ok());
    /// let err = TrustedProxies::cidrs(["0.0.0.0/0"]).unwrap_err();
    /// assert!(matches!(err, ProxyRangeError::Everything(_)));
    /// assert!(err.to_string().contains("behind_any_proxy_unsafe"));
    /// ```
    pub fn cidrs<I, T>(cidrs: I) -> Result<Self, ProxyRangeError>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let cidrs = cidrs
            .into_iter()
            .map(|c| c.as_ref().parse())
            .collect::<Result<Vec<Cidr>, _>>()?;
        Ok(TrustedProxies::Cidrs(ProxyNetworks::new(cidrs)?))
    }

    /// Whether any proxy is trusted.
    pub fn is_none(&self) -> bool {
        match self {
            TrustedProxies::None => true,
            TrustedProxies::Cidrs(c) => c.as_slice().is_empty(),
            TrustedProxies::Hops(n) => *n == 0,
        }
    }

    /// Whether `ip` is a trusted proxy (for [`TrustedProxies::Hops`], only the peer position decides).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        match self {
            TrustedProxies::Cidrs(c) => c.contains(ip),
            _ => false,
        }
    }

    /// The client address for a request whose TCP peer is `peer` and whose forwarding header parsed to
    /// `chain`.
    ///
    /// * Nothing trusted, or the peer is not a trusted proxy: the peer (headers are ignored — a client
    ///   that connects directly cannot choose its key by writing `X-Forwarded-For`).
    /// * Otherwise walk right to left; the first address that is not trusted is the client. If every
    ///   element is trusted, the left-most one is. An opaque element (`unknown`, garbage) stops the walk:
    ///   nothing left of it can be attributed, so the last address reached (the proxy that could not say)
    ///   is used — conservative, it rate limits that proxy rather than letting garbage pick a key.
    /// * [`TrustedProxies::Hops`]`(n)`: the element `n` hops left of the peer; if the chain is shorter
    ///   than that (the request skipped a proxy), the peer.
    pub fn resolve(&self, peer: IpAddr, chain: &ForwardedChain) -> IpAddr {
        let peer = normalize(peer);
        match self {
            TrustedProxies::None => peer,
            TrustedProxies::Cidrs(cidrs) => {
                let trusted = |ip: IpAddr| cidrs.contains(ip);
                if !trusted(peer) {
                    return peer;
                }
                let mut last = peer;
                for hop in chain.iter_rev() {
                    match hop {
                        Hop::Addr(ip) if trusted(ip) => last = ip,
                        Hop::Addr(ip) => return ip,
                        Hop::Opaque => return last,
                    }
                }
                last
            }
            TrustedProxies::Hops(n) => {
                if *n == 0 {
                    return peer;
                }
                // The peer is hop 0; chain elements from the right are hops 1, 2, …
                let mut last = peer;
                for (i, hop) in chain.iter_rev().enumerate() {
                    match hop {
                        Hop::Addr(ip) => last = ip,
                        Hop::Opaque => return last,
                    }
                    if i + 1 == *n {
                        return last;
                    }
                }
                peer
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(s: &str) -> ForwardedChain {
        ForwardedChain::from_x_forwarded_for([s.as_bytes()])
    }

    #[test]
    fn nodes_parse() {
        assert_eq!(parse_node(b"1.2.3.4"), Hop::Addr(ip("1.2.3.4")));
        assert_eq!(parse_node(b"1.2.3.4:8080"), Hop::Addr(ip("1.2.3.4")));
        assert_eq!(
            parse_node(b"[2001:db8::1]:443"),
            Hop::Addr(ip("2001:db8::1"))
        );
        assert_eq!(parse_node(b"[2001:db8::1]"), Hop::Addr(ip("2001:db8::1")));
        assert_eq!(parse_node(b"2001:db8::1"), Hop::Addr(ip("2001:db8::1")));
        assert_eq!(parse_node(b"::ffff:1.2.3.4"), Hop::Addr(ip("1.2.3.4")));
        assert_eq!(parse_node(b"unknown"), Hop::Opaque);
        assert_eq!(parse_node(b"_hidden"), Hop::Opaque);
        assert_eq!(parse_node(b"[2001:db8::1]x"), Hop::Opaque);
        assert_eq!(parse_node(b"1.2.3.4:"), Hop::Opaque);
        assert_eq!(parse_node(b"\xff\xfe"), Hop::Opaque);
    }

    #[test]
    fn forwarded_parses_for_params_with_quotes() {
        let c = ForwardedChain::from_forwarded([
            &b"for=192.0.2.43;proto=http, for=\"[2001:db8:cafe::17]:4711\";by=x"[..],
            &b"For=unknown, by=1.1.1.1;host=\"a,b;c\", for=198.51.100.17"[..],
        ]);
        let hops: Vec<Hop> = c.iter_rev().collect();
        assert_eq!(
            hops,
            vec![
                Hop::Addr(ip("198.51.100.17")),
                Hop::Opaque,
                Hop::Opaque,
                Hop::Addr(ip("2001:db8:cafe::17")),
                Hop::Addr(ip("192.0.2.43")),
            ]
        );
    }

    #[test]
    fn untrusted_peer_ignores_headers() {
        let p = TrustedProxies::cidrs(["10.0.0.0/8"]).unwrap();
        assert_eq!(
            p.resolve(ip("203.0.113.9"), &xff("1.1.1.1")),
            ip("203.0.113.9")
        );
        assert_eq!(
            TrustedProxies::None.resolve(ip("203.0.113.9"), &xff("1.1.1.1")),
            ip("203.0.113.9")
        );
    }

    #[test]
    fn trusted_chain_walks_right_to_left() {
        let p = TrustedProxies::cidrs(["10.0.0.0/8", "192.168.0.0/16"]).unwrap();
        let peer = ip("10.0.0.1");
        assert_eq!(
            p.resolve(peer, &xff("6.6.6.6, 203.0.113.7, 192.168.1.1")),
            ip("203.0.113.7")
        );
        assert_eq!(
            p.resolve(peer, &xff("10.1.1.1, 192.168.1.1")),
            ip("10.1.1.1")
        );
        assert_eq!(p.resolve(peer, &xff("")), peer);
        assert_eq!(
            p.resolve(peer, &xff("6.6.6.6, unknown, 192.168.1.1")),
            ip("192.168.1.1")
        );
        assert_eq!(
            p.resolve(ip("::ffff:10.0.0.1"), &xff("203.0.113.7")),
            ip("203.0.113.7")
        );
    }

    #[test]
    fn hop_count() {
        let peer = ip("10.0.0.1");
        assert_eq!(
            TrustedProxies::Hops(1).resolve(peer, &xff("6.6.6.6, 203.0.113.7")),
            ip("203.0.113.7")
        );
        assert_eq!(
            TrustedProxies::Hops(2).resolve(peer, &xff("6.6.6.6, 203.0.113.7, 10.9.9.9")),
            ip("203.0.113.7")
        );
        // Shorter than the configured hop count: the request bypassed a proxy; use the peer.
        assert_eq!(TrustedProxies::Hops(3).resolve(peer, &xff("6.6.6.6")), peer);
    }

    #[test]
    fn long_chains_keep_the_right_end() {
        let mut s = String::new();
        for i in 0..1000 {
            s.push_str(&format!("1.1.{}.{}, ", i / 256, i % 256));
        }
        s.push_str("203.0.113.7");
        let c = xff(&s);
        assert!(c.truncated());
        let p = TrustedProxies::cidrs(["10.0.0.0/8"]).unwrap();
        assert_eq!(p.resolve(ip("10.0.0.1"), &c), ip("203.0.113.7"));
    }

    #[test]
    fn proxy_ranges_that_would_believe_clients_are_refused() {
        let check = |s: &str| s.parse::<Cidr>().unwrap().check_proxy_range();
        for everything in ["0.0.0.0/0", "::/0", "::ffff:0.0.0.0/96", "1.2.3.4/0"] {
            assert!(
                matches!(check(everything), Err(ProxyRangeError::Everything(_))),
                "{everything}"
            );
        }
        for too_wide in [
            "0.0.0.0/1",
            "128.0.0.0/2",
            "10.0.0.0/7",
            "2000::/3",
            "2001::/15",
        ] {
            assert!(
                matches!(check(too_wide), Err(ProxyRangeError::TooWide(_))),
                "{too_wide}"
            );
        }
        for proxy in [
            "10.0.0.0/8",
            "17.0.0.0/8",
            "104.16.0.0/13",
            "192.0.2.7",
            "fc00::/7",
            "fd00::/8",
            "fe80::/10",
            "2a06:98c0::/29",
            "2001:db8::/32",
            "2001::/16",
            "::1",
        ] {
            assert_eq!(check(proxy), Ok(()), "{proxy}");
        }
        let err = TrustedProxies::cidrs(["10.0.0.0/8", "0.0.0.0/0"]).unwrap_err();
        assert_eq!(
            err,
            ProxyRangeError::Everything("0.0.0.0/0".parse().unwrap())
        );
        let msg = err.to_string();
        assert!(msg.contains("0.0.0.0/0 contains every address"), "{msg}");
        assert!(msg.contains("ClientIp::behind_any_proxy_unsafe()"), "{msg}");
        assert!(matches!(
            TrustedProxies::cidrs(["10.0.0.0/33"]),
            Err(ProxyRangeError::Syntax(_))
        ));
    }

    #[test]
    fn cidrs_display_as_they_parse() {
        for s in ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "::/0"] {
            assert_eq!(s.parse::<Cidr>().unwrap().to_string(), s);
        }
        assert_eq!(
            "10.1.2.3/8".parse::<Cidr>().unwrap().to_string(),
            "10.0.0.0/8"
        );
    }

    #[test]
    fn cidr_parsing_and_masking() {
        let c: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(c.contains(ip("2001:db8:ffff::1")));
        assert!(!c.contains(ip("2001:db9::1")));
        assert!(!c.contains(ip("10.0.0.1")));
        let c: Cidr = "::ffff:10.0.0.0/104".parse().unwrap();
        assert!(c.contains(ip("10.2.3.4")));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("nope".parse::<Cidr>().is_err());
        assert_eq!(mask(ip("2001:db8:1:2:3:4:5:6"), 64), ip("2001:db8:1:2::"));
        assert_eq!(mask(ip("1.2.3.4"), 0), ip("0.0.0.0"));
    }
}
