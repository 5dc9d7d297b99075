//! Shared by the proxy's tests: a proxy in process, a plain HTTP client with no limiter of its own, a
//! recording tap between the proxy and the simulator, and raw TCP for requests no client would send.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use ratelimit_client::profile::Discord;
use ratelimit_client::LimiterBuilder;
use ratelimit_proxy::{strip_hop_by_hop, Proxy, ProxyConfig, RunningProxy, Upstream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub mod replica;

/// The header a test puts on each request to find the tap's record of it.
pub const TEST_ID: &str = "x-test-id";

/// A proxy in front of `upstream` (`http://host:port/api`), configured by `tweak`, its limiter by
/// `limiter`.
pub async fn proxy(
    upstream: &str,
    tweak: impl FnOnce(&mut ProxyConfig),
    limiter: impl FnOnce(LimiterBuilder<Discord>) -> LimiterBuilder<Discord>,
) -> RunningProxy {
    let mut config = ProxyConfig::new(
        "127.0.0.1:0".parse().unwrap(),
        Upstream::parse(upstream).unwrap(),
    );
    tweak(&mut config);
    let built = limiter(Proxy::limiter_builder(&config)).build().unwrap();
    Proxy::with_limiter(config, built)
        .unwrap()
        .start()
        .await
        .unwrap()
}

/// A plain HTTP/1.1 client: no limiter, no retries.
pub type Bot = Client<HttpConnector, Full<Bytes>>;

pub fn bot() -> Bot {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A response read whole.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends a request and reads the whole response.
pub async fn send(bot: &Bot, req: Request<Full<Bytes>>) -> Result<Answer, String> {
    let res = bot.request(req).await.map_err(|e| format!("{e:?}"))?;
    let (parts, body) = res.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// A request with the simulator's token.
pub fn request(method: Method, url: &str, body: Option<&str>) -> http::request::Builder {
    let b = Request::builder().method(method).uri(url).header(
        "authorization",
        format!("Bot {}", discord_sim::DEFAULT_TOKEN),
    );
    match body {
        Some(_) => b.header("content-type", "application/json"),
        None => b,
    }
}

pub fn body(s: Option<&str>) -> Full<Bytes> {
    Full::new(Bytes::from(s.unwrap_or_default().to_owned()))
}

/// What the tap saw of one request: the headers it arrived with, and the last response the upstream
/// gave it (as the tap handed it on).
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub request_headers: Vec<HeaderMap>,
    pub response: Option<Answer>,
}

/// An HTTP forwarder between the proxy and the simulator that records, per `x-test-id`, what the
/// proxy sent and what the upstream answered. It adds a hop-by-hop header pair to every response, which
/// the proxy must not hand on.
///
/// Each connection from the proxy gets its own connection to the simulator, opened as soon as the
/// proxy's is accepted: a handshake on the tap's side while the proxy's request is on its way would be a
/// delay the proxy cannot see, and would make requests arrive later than the proxy measured.
pub struct Tap {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<HashMap<String, Seen>>>,
}

/// The hop-by-hop header the tap adds to responses (named by `Connection`).
pub const TAP_HOP: &str = "x-tap-hop";

impl Tap {
    pub async fn start(upstream: SocketAddr) -> Tap {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<HashMap<String, Seen>>> = Arc::default();
        let record = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let record = Arc::clone(&record);
                tokio::spawn(async move {
                    let Ok(to_sim) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let _ = to_sim.set_nodelay(true);
                    let _ = stream.set_nodelay(true);
                    let Ok((sender, conn)) =
                        hyper::client::conn::http1::handshake(TokioIo::new(to_sim)).await
                    else {
                        return;
                    };
                    tokio::spawn(conn);
                    let sender = Arc::new(tokio::sync::Mutex::new(sender));
                    let svc = service_fn(move |req| {
                        relay(Arc::clone(&sender), Arc::clone(&record), upstream, req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Tap { addr, seen }
    }

    pub fn seen(&self, id: &str) -> Seen {
        self.seen
            .lock()
            .unwrap()
            .get(id)
            .cloned()
            .unwrap_or_default()
    }
}

async fn relay(
    sender: Arc<tokio::sync::Mutex<hyper::client::conn::http1::SendRequest<Full<Bytes>>>>,
    record: Arc<Mutex<HashMap<String, Seen>>>,
    upstream: SocketAddr,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let id = parts
        .headers
        .get(TEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    record
        .lock()
        .unwrap()
        .entry(id.clone())
        .or_default()
        .request_headers
        .push(parts.headers.clone());
    let body = body.collect().await.unwrap().to_bytes();
    let pq = parts.uri.path_and_query().unwrap().as_str();
    let mut out = Request::builder()
        .method(parts.method.clone())
        .uri(pq)
        .body(Full::new(body))
        .unwrap();
    *out.headers_mut() = parts.headers;
    out.headers_mut().insert(
        http::header::HOST,
        HeaderValue::from_str(&upstream.to_string()).unwrap(),
    );
    let res = sender.lock().await.send_request(out).await.unwrap();
    let (mut head, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    head.headers
        .append(http::header::CONNECTION, HeaderValue::from_static(TAP_HOP));
    head.headers.insert(
        HeaderName::from_static(TAP_HOP),
        HeaderValue::from_static("1"),
    );
    record.lock().unwrap().entry(id).or_default().response = Some(Answer {
        status: head.status,
        headers: head.headers.clone(),
        body: body.clone(),
    });
    Ok(Response::from_parts(head, Full::new(body)))
}

/// Writes `bytes` on a new connection and reads what comes back until the peer closes (or 5 s pass).
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// POSTs `json` to `url` with the simulator's token.
pub async fn post(bot: &Bot, url: &str, json: &str) -> Result<Answer, String> {
    let req = request(Method::POST, url, Some(json))
        .body(body(Some(json)))
        .unwrap();
    send(bot, req).await
}

/// GETs `url` with the simulator's token.
pub async fn get(bot: &Bot, url: &str) -> Result<Answer, String> {
    send(
        bot,
        request(Method::GET, url, None).body(body(None)).unwrap(),
    )
    .await
}

/// GETs `url` with no token (the admin listener's pages).
pub async fn get_untokened(bot: &Bot, url: &str) -> Result<Answer, String> {
    send(bot, Request::get(url).body(body(None)).unwrap()).await
}

/// The end-to-end part of a header map: what a proxy must hand on unchanged.
pub fn end_to_end(h: &HeaderMap) -> HeaderMap {
    let mut h = h.clone();
    strip_hop_by_hop(&mut h);
    h
}

/// The bot got what the upstream sent: status, body and end-to-end headers, byte for byte.
pub fn assert_handed_on_intact(bot: &Answer, upstream: &Answer, id: &str) {
    assert_eq!(bot.status, upstream.status, "{id}: status");
    assert_eq!(bot.body, upstream.body, "{id}: body");
    assert_eq!(
        bot.headers,
        end_to_end(&upstream.headers),
        "{id}: headers (the upstream's, hop-by-hop ones removed)"
    );
    assert!(
        bot.headers.get(TAP_HOP).is_none(),
        "{id}: a hop-by-hop header was handed on"
    );
}
