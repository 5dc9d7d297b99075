//! A fault-injecting TCP proxy on a free loopback port, between a client and a real server (a
//! `redis-server`), switched from fault to fault at run time by the test.
//!
//! Every connection the proxy accepts gets its own connection to the upstream, and bytes are pumped both
//! ways. The current [`Fault`] applies to the connections already open as well as to new ones, from the
//! next chunk on (a black hole, a reset or a half-close also act on idle connections at once):
//!
//! * [`Fault::PassThrough`]: bytes go through unchanged.
//! * [`Fault::Delay`]: each chunk, either way, is held for the given time before it is forwarded.
//! * [`Fault::BlackHole`]: nothing is read or forwarded and connections stay open, as in a network
//!   partition: what was sent waits in the kernel's buffers and flows again when the fault is lifted (TCP
//!   delivers late, never loses — the peer may have given up by then).
//! * [`Fault::Reset`]: every connection is aborted with a TCP RST (`SO_LINGER` 0), the open ones and each
//!   new one as soon as it is accepted.
//! * [`Fault::HalfClose`]: the proxy shuts down its write half towards one side (that side reads EOF);
//!   the other direction keeps flowing. A shut-down half stays shut when the fault is lifted.
//! * [`Fault::Corrupt`]: server → client data is damaged ([`Corruption`]); client → server data is not.
//! * [`Fault::Refuse`]: the listening socket is closed, so new connections are refused; open connections
//!   carry on unchanged. The proxy listens on the same port again when the fault is lifted.
//!
//! ```
//! use std::time::Duration;
//! use ratelimit_test_support::fault_proxy::{Corruption, Fault, FaultProxy};
//! use ratelimit_test_support::redis_server::RedisServer;
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let server = RedisServer::start();
//! let proxy = FaultProxy::to_redis(&server).await.unwrap();
//! let mut conn = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
//! let mut reply = [0u8; 7];
//!
//! conn.write_all(b"PING\r\n").await.unwrap();
//! conn.read_exact(&mut reply).await.unwrap();
//! assert_eq!(&reply, b"+PONG\r\n");
//!
//! // Switched while the connection is open: the next reply is replaced.
//! proxy.set(Fault::Corrupt(Corruption::Replace(b"-ERR x\r\n".to_vec())));
//! conn.write_all(b"PING\r\n").await.unwrap();
//! let mut garbage = [0u8; 8];
//! conn.read_exact(&mut garbage).await.unwrap();
//! assert_eq!(&garbage, b"-ERR x\r\n");
//!
//! // A black hole holds the request; lifting it lets the request and its reply through.
//! proxy.set(Fault::BlackHole);
//! conn.write_all(b"PING\r\n").await.unwrap();
//! let held = tokio::time::timeout(Duration::from_millis(100), conn.read_exact(&mut reply)).await;
//! assert!(held.is_err(), "nothing comes back through a black hole");
//! proxy.set(Fault::PassThrough);
//! conn.read_exact(&mut reply).await.unwrap();
//! assert_eq!(&reply, b"+PONG\r\n");
//! # }
//! ```

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::redis_server::RedisServer;

/// One read's worth of bytes: large enough for any reply the tests provoke in one chunk.
const CHUNK_BYTES: usize = 16 * 1024;

/// How long the proxy keeps trying to listen on its port again after [`Fault::Refuse`] is lifted.
const REBIND_ATTEMPTS: usize = 100;
const REBIND_PAUSE: Duration = Duration::from_millis(10);

/// What the proxy does to the traffic; see the [module docs](self).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Fault {
    /// Forward unchanged.
    #[default]
    PassThrough,
    /// Hold each chunk, either way, for this long before forwarding it.
    Delay(Duration),
    /// Forward nothing, read nothing, keep connections open.
    BlackHole,
    /// Abort every connection with an RST.
    Reset,
    /// Shut down the proxy's write half towards one side.
    HalfClose(Direction),
    /// Damage server → client data.
    Corrupt(Corruption),
    /// Refuse new connections (the listener is closed); open ones are untouched.
    Refuse,
}

/// A direction of a proxied connection, named by the side that receives the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Server → client: the client reads EOF.
    ToClient,
    /// Client → server: the server reads EOF.
    ToServer,
}

/// How [`Fault::Corrupt`] damages each server → client chunk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Corruption {
    /// XOR the middle byte with 1: a digit stays a digit (a plausible wrong number), a `\r` or a type
    /// byte breaks the framing.
    FlipBytes,
    /// Forward only the first half of the chunk; the rest is lost and the stream carries on, so the client
    /// waits for bytes that never come and then misreads the next reply.
    Truncate,
    /// Forward these bytes instead of the chunk (e.g. well-formed RESP with impossible values).
    Replace(Vec<u8>),
}

impl Corruption {
    fn apply(&self, chunk: &[u8]) -> Vec<u8> {
        match self {
            Corruption::FlipBytes => {
                let mut out = chunk.to_vec();
                let middle = out.len() / 2;
                if let Some(b) = out.get_mut(middle) {
                    *b ^= 1;
                }
                out
            }
            Corruption::Truncate => chunk[..chunk.len() / 2].to_vec(),
            Corruption::Replace(bytes) => bytes.clone(),
        }
    }
}

/// A running proxy; stops (and drops its connections) when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    control: watch::Sender<Fault>,
    counts: Arc<Counts>,
    task: JoinHandle<()>,
}

/// What the proxy has done so far, for tests that act after a fault has hit (say, lift it once exactly
/// one reply was damaged).
#[derive(Debug, Default)]
struct Counts {
    accepted: AtomicU64,
    damaged: AtomicU64,
}

impl FaultProxy {
    /// Listens on a free loopback port and forwards every connection to `upstream`, passing bytes
    /// through until told otherwise. Runs on the current tokio runtime.
    pub async fn start(upstream: SocketAddr) -> io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (control, faults) = watch::channel(Fault::PassThrough);
        let counts = Arc::new(Counts::default());
        let task = tokio::spawn(accept_loop(
            listener,
            addr,
            upstream,
            faults,
            counts.clone(),
        ));
        Ok(FaultProxy {
            addr,
            control,
            counts,
            task,
        })
    }

    /// A proxy in front of `server` (see [`start`](Self::start)).
    pub async fn to_redis(server: &RedisServer) -> io::Result<Self> {
        Self::start(SocketAddr::from(([127, 0, 0, 1], server.port))).await
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `redis://<addr>/`, for a Redis client.
    pub fn redis_url(&self) -> String {
        format!("redis://{}/", self.addr)
    }

    /// Switches to `fault`, for open and new connections alike.
    pub fn set(&self, fault: Fault) {
        self.control.send_replace(fault);
    }

    /// The fault in force.
    pub fn fault(&self) -> Fault {
        self.control.borrow().clone()
    }

    /// How many connections the proxy has accepted so far (reconnections show up here).
    pub fn accepted(&self) -> u64 {
        self.counts.accepted.load(Ordering::Relaxed)
    }

    /// How many server → client chunks [`Fault::Corrupt`] has damaged so far (a chunk is usually one
    /// reply; pipelined replies can share one).
    pub fn damaged(&self) -> u64 {
        self.counts.damaged.load(Ordering::Relaxed)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        // The accept task owns the connection tasks (a JoinSet): aborting it aborts them.
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    addr: SocketAddr,
    upstream: SocketAddr,
    mut faults: watch::Receiver<Fault>,
    counts: Arc<Counts>,
) {
    let mut listener = Some(listener);
    let mut connections = JoinSet::new();
    loop {
        while connections.try_join_next().is_some() {}
        let refusing = *faults.borrow_and_update() == Fault::Refuse;
        if refusing {
            // Closing the listening socket is what makes the kernel refuse connections.
            listener = None;
        } else if listener.is_none() {
            listener = rebind(addr).await;
        }
        let Some(l) = &listener else {
            if faults.changed().await.is_err() {
                return;
            }
            continue;
        };
        tokio::select! {
            conn = l.accept() => {
                if let Ok((client, _)) = conn {
                    counts.accepted.fetch_add(1, Ordering::Relaxed);
                    connections.spawn(serve(client, upstream, faults.clone(), counts.clone()));
                }
            }
            changed = faults.changed() => if changed.is_err() { return },
        }
    }
}

async fn rebind(addr: SocketAddr) -> Option<TcpListener> {
    for _ in 0..REBIND_ATTEMPTS {
        // tokio listeners set SO_REUSEADDR, so the port just closed can be bound again at once.
        if let Ok(l) = TcpListener::bind(addr).await {
            return Some(l);
        }
        tokio::time::sleep(REBIND_PAUSE).await;
    }
    eprintln!("fault proxy: could not listen on {addr} again; connections will be refused");
    None
}

/// Why a pump stopped early.
enum Stop {
    /// [`Fault::Reset`]: abort both sides.
    Reset,
    /// An I/O error on either side, or the proxy going away: close both sides.
    Closed,
}

async fn serve(
    client: TcpStream,
    upstream: SocketAddr,
    faults: watch::Receiver<Fault>,
    counts: Arc<Counts>,
) {
    if *faults.borrow() == Fault::Reset {
        reset(client);
        return;
    }
    let Ok(server) = TcpStream::connect(upstream).await else {
        // The upstream is down: the client sees its connection aborted, as it would without a proxy.
        reset(client);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let (mut client, mut server) = (client, server);
    let outcome = {
        let (client_read, client_write) = client.split();
        let (server_read, server_write) = server.split();
        tokio::try_join!(
            pump(
                client_read,
                server_write,
                Direction::ToServer,
                faults.clone(),
                &counts,
            ),
            pump(
                server_read,
                client_write,
                Direction::ToClient,
                faults,
                &counts
            ),
        )
    };
    if let Err(Stop::Reset) = outcome {
        reset(client);
        reset(server);
    }
}

/// Drops `stream` with `SO_LINGER` 0, so the kernel sends an RST instead of a FIN.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Forwards `from` to `to` under the fault in force, chunk by chunk, until EOF (passed on as a FIN), a
/// half-close of this direction, a reset or an error.
async fn pump<R, W>(
    mut from: R,
    mut to: W,
    direction: Direction,
    mut faults: watch::Receiver<Fault>,
    counts: &Counts,
) -> Result<(), Stop>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; CHUNK_BYTES];
    loop {
        let fault = faults.borrow_and_update().clone();
        match fault {
            Fault::Reset => return Err(Stop::Reset),
            Fault::BlackHole => {
                faults.changed().await.map_err(|_| Stop::Closed)?;
                continue;
            }
            Fault::HalfClose(d) if d == direction => {
                let _ = to.shutdown().await;
                return Ok(());
            }
            _ => {}
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => read.map_err(|_| Stop::Closed)?,
            changed = faults.changed() => {
                changed.map_err(|_| Stop::Closed)?;
                continue;
            }
        };
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        // The fault may have changed while the read was pending: what is in force now decides.
        let chunk = shape(&buf[..n], direction, &mut faults, counts).await?;
        if let Some(bytes) = chunk {
            to.write_all(&bytes).await.map_err(|_| Stop::Closed)?;
        }
    }
}

/// What to forward of one chunk read in `direction`, under the fault in force (waiting out a delay or a
/// black hole); `None` when this direction has been half-closed meanwhile (the chunk is dropped).
async fn shape(
    chunk: &[u8],
    direction: Direction,
    faults: &mut watch::Receiver<Fault>,
    counts: &Counts,
) -> Result<Option<Vec<u8>>, Stop> {
    loop {
        let fault = faults.borrow_and_update().clone();
        match fault {
            Fault::PassThrough | Fault::Refuse => return Ok(Some(chunk.to_vec())),
            Fault::Reset => return Err(Stop::Reset),
            Fault::HalfClose(d) if d == direction => return Ok(None),
            Fault::HalfClose(_) => return Ok(Some(chunk.to_vec())),
            Fault::Corrupt(c) if direction == Direction::ToClient => {
                counts.damaged.fetch_add(1, Ordering::Relaxed);
                return Ok(Some(c.apply(chunk)));
            }
            Fault::Corrupt(_) => return Ok(Some(chunk.to_vec())),
            Fault::BlackHole => faults.changed().await.map_err(|_| Stop::Closed)?,
            Fault::Delay(d) => {
                if hold(d, faults).await? {
                    return Ok(Some(chunk.to_vec()));
                }
            }
        }
    }
}

/// Waits `d`; true when it elapsed, false when the fault changed to something other than a delay first
/// (the caller re-reads it), an error when the proxy went away.
async fn hold(d: Duration, faults: &mut watch::Receiver<Fault>) -> Result<bool, Stop> {
    let until = Instant::now() + d;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => return Ok(true),
            changed = faults.changed() => {
                changed.map_err(|_| Stop::Closed)?;
                if !matches!(*faults.borrow(), Fault::Delay(_)) {
                    return Ok(false);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on a free loopback port.
    async fn echo() -> SocketAddr {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    async fn setup() -> (FaultProxy, TcpStream) {
        let proxy = FaultProxy::start(echo().await).await.unwrap();
        let conn = TcpStream::connect(proxy.addr()).await.unwrap();
        (proxy, conn)
    }

    async fn roundtrip(conn: &mut TcpStream, msg: &[u8]) -> io::Result<Vec<u8>> {
        conn.write_all(msg).await?;
        let mut buf = vec![0u8; msg.len()];
        conn.read_exact(&mut buf).await?;
        Ok(buf)
    }

    const QUIET: Duration = Duration::from_millis(100);

    #[tokio::test]
    async fn passes_bytes_through_and_delays_them_when_told() {
        let (proxy, mut conn) = setup().await;
        assert_eq!(roundtrip(&mut conn, b"hello").await.unwrap(), b"hello");
        proxy.set(Fault::Delay(Duration::from_millis(60)));
        let started = Instant::now();
        assert_eq!(roundtrip(&mut conn, b"slow").await.unwrap(), b"slow");
        // Held once each way.
        assert!(started.elapsed() >= Duration::from_millis(120));
        assert_eq!(proxy.accepted(), 1);
    }

    #[tokio::test]
    async fn a_black_hole_holds_bytes_until_it_is_lifted() {
        let (proxy, mut conn) = setup().await;
        proxy.set(Fault::BlackHole);
        conn.write_all(b"held").await.unwrap();
        let mut buf = [0u8; 4];
        let read = tokio::time::timeout(QUIET, conn.read_exact(&mut buf)).await;
        assert!(read.is_err(), "nothing passes a black hole");
        proxy.set(Fault::PassThrough);
        conn.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"held");
    }

    #[tokio::test]
    async fn reset_aborts_open_and_new_connections() {
        let (proxy, mut conn) = setup().await;
        assert_eq!(roundtrip(&mut conn, b"x").await.unwrap(), b"x");
        proxy.set(Fault::Reset);
        let mut buf = [0u8; 1];
        let err = conn.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        let mut fresh = TcpStream::connect(proxy.addr()).await.unwrap();
        let err = fresh.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
        proxy.set(Fault::PassThrough);
        let mut again = TcpStream::connect(proxy.addr()).await.unwrap();
        assert_eq!(roundtrip(&mut again, b"y").await.unwrap(), b"y");
    }

    #[tokio::test]
    async fn half_close_towards_the_client_sends_eof_and_keeps_the_other_way() {
        let (proxy, mut conn) = setup().await;
        proxy.set(Fault::HalfClose(Direction::ToClient));
        let mut buf = [0u8; 1];
        assert_eq!(conn.read(&mut buf).await.unwrap(), 0, "EOF");
        conn.write_all(b"still writable").await.unwrap();
    }

    #[tokio::test]
    async fn half_close_towards_the_server_ends_in_eof_for_the_client() {
        let (proxy, mut conn) = setup().await;
        proxy.set(Fault::HalfClose(Direction::ToServer));
        // The echo server reads EOF and closes; its FIN is passed on.
        let mut buf = [0u8; 1];
        assert_eq!(conn.read(&mut buf).await.unwrap(), 0, "EOF");
    }

    #[tokio::test]
    async fn corruption_damages_only_server_to_client_bytes() {
        let (proxy, mut conn) = setup().await;
        proxy.set(Fault::Corrupt(Corruption::FlipBytes));
        // Echoed unchanged to the server, flipped once on the way back.
        assert_eq!(roundtrip(&mut conn, b"1234").await.unwrap(), b"1224");
        assert_eq!(proxy.damaged(), 1);
        proxy.set(Fault::Corrupt(Corruption::Replace(b"-ERR\r\n".to_vec())));
        assert_eq!(roundtrip(&mut conn, b"abcdef").await.unwrap(), b"-ERR\r\n");
        proxy.set(Fault::Corrupt(Corruption::Truncate));
        conn.write_all(b"abcd").await.unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf[..2]).await.unwrap();
        assert_eq!(&buf[..2], b"ab");
        let rest = tokio::time::timeout(QUIET, conn.read(&mut buf)).await;
        assert!(rest.is_err(), "the other half never arrives");
        proxy.set(Fault::PassThrough);
        assert_eq!(roundtrip(&mut conn, b"efgh").await.unwrap(), b"efgh");
    }

    #[tokio::test]
    async fn refuse_closes_the_listener_and_lifting_it_listens_again() {
        let (proxy, mut conn) = setup().await;
        // Accepted before the listener closes (a connection still in its backlog would be reset).
        assert_eq!(roundtrip(&mut conn, b"in").await.unwrap(), b"in");
        proxy.set(Fault::Refuse);
        // The accept task closes the listener on its next turn.
        let mut refused = false;
        for _ in 0..100 {
            match TcpStream::connect(proxy.addr()).await {
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    refused = true;
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
        assert!(refused, "new connections are refused");
        assert_eq!(roundtrip(&mut conn, b"open").await.unwrap(), b"open");
        proxy.set(Fault::PassThrough);
        let mut accepted = None;
        for _ in 0..100 {
            if let Ok(c) = TcpStream::connect(proxy.addr()).await {
                accepted = Some(c);
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let mut again = accepted.expect("listening again");
        assert_eq!(roundtrip(&mut again, b"z").await.unwrap(), b"z");
    }
}
