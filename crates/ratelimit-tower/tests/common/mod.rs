//! Shared helpers: real axum servers on 127.0.0.1 and a real HTTP/1.1 client (hyper-util).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;

use axum::Router;
use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use ratelimit_core::{Decision, Policy, PolicySet, Quota, Store, StoreError};

/// Serves `app` with `ConnectInfo<SocketAddr>` on a free loopback port; the server task ends with the
/// test's runtime.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

/// Serves `app` WITHOUT connect info (the classic misconfiguration).
pub async fn serve_plain(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

/// A router whose one route, `GET /`, answers 200 "ok": the app behind the layer under test.
pub fn ok_at_root() -> Router {
    Router::new().route("/", axum::routing::get(|| async { "ok" }))
}

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

pub async fn send(
    client: &HttpClient,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = client
        .request(req.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let (parts, body) = res.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

pub async fn get(
    client: &HttpClient,
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    send(client, addr, "GET", path, headers).await
}

/// A parsed `RateLimit` / `RateLimit-Policy` item: name and integer parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SfItem {
    pub name: String,
    pub params: Vec<(String, SfParam)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SfParam {
    Int(i64),
    Bytes(Vec<u8>),
}

impl SfItem {
    pub fn int(&self, key: &str) -> Option<i64> {
        self.params.iter().find_map(|(k, v)| match v {
            SfParam::Int(i) if k == key => Some(*i),
            _ => None,
        })
    }

    pub fn bytes(&self, key: &str) -> Option<&[u8]> {
        self.params.iter().find_map(|(k, v)| match v {
            SfParam::Bytes(b) if k == key => Some(&b[..]),
            _ => None,
        })
    }
}

/// Parses every field line of `name` as one RFC 9651 List (lines concatenate), with the `sfv` crate;
/// also checks the text is the canonical serialisation (sfv re-serialises it identically).
pub fn sf_list(headers: &HeaderMap, name: &str) -> Vec<SfItem> {
    let joined = headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect::<Vec<_>>()
        .join(", ");
    let list: sfv::List = sfv::Parser::new(&joined)
        .parse()
        .unwrap_or_else(|e| panic!("{name}: {joined:?}: {e}"));
    let reser: Option<String> = sfv::FieldType::serialize(&list);
    let reser = reser.expect("non-empty list");
    assert_eq!(reser, joined, "{name} is not in canonical RFC 9651 form");
    list.into_iter()
        .map(|e| match e {
            sfv::ListEntry::Item(item) => SfItem {
                name: item
                    .bare_item
                    .as_string()
                    .expect("policy name is an sf-string")
                    .as_str()
                    .to_owned(),
                params: item
                    .params
                    .iter()
                    .map(|(k, v)| {
                        let v = match v {
                            sfv::BareItem::Integer(i) => SfParam::Int(i64::from(*i)),
                            sfv::BareItem::ByteSequence(b) => SfParam::Bytes(b.clone()),
                            other => panic!("unexpected parameter {k:?}={other:?}"),
                        };
                        (k.as_str().to_owned(), v)
                    })
                    .collect(),
            },
            sfv::ListEntry::InnerList(_) => panic!("{name}: inner lists are not expected"),
        })
        .collect()
}

pub fn set(policies: impl IntoIterator<Item = Policy>) -> PolicySet {
    PolicySet::new(policies).unwrap()
}

pub fn per_hour(name: &str, n: u64) -> Policy {
    Policy::fixed_window(name, Quota::per_hour(n).build().unwrap()).unwrap()
}

pub fn gcra_per_sec(name: &str, n: u64) -> Policy {
    Policy::gcra(name, Quota::per_second(n).build().unwrap()).unwrap()
}

/// A store that cannot answer: nothing real fails on demand in-process, so this fake stands in for a
/// Redis outage.
pub struct FailingStore;

impl Store<[u8], PolicySet> for FailingStore {
    async fn check(&self, _: &PolicySet, _: &[u8], _: u64) -> Result<Decision, StoreError> {
        Err(StoreError::Unavailable("test store is down".into()))
    }
    async fn peek(&self, _: &PolicySet, _: &[u8], _: u64) -> Result<Decision, StoreError> {
        Err(StoreError::Unavailable("test store is down".into()))
    }
    async fn refund(&self, _: &PolicySet, _: &[u8], _: u64) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("test store is down".into()))
    }
    async fn reset(&self, _: &PolicySet, _: &[u8]) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("test store is down".into()))
    }
}

/// The real in-memory store behind an asynchronous boundary (it yields to the runtime before every
/// call), so the layer takes its general path for stores that are not known to be synchronous.
pub struct YieldingStore(pub ratelimit_core::MemoryStore<Vec<u8>, PolicySet>);

impl Store<[u8], PolicySet> for YieldingStore {
    async fn check(&self, r: &PolicySet, k: &[u8], c: u64) -> Result<Decision, StoreError> {
        tokio::task::yield_now().await;
        self.0.check(r, k, c)
    }
    async fn peek(&self, r: &PolicySet, k: &[u8], c: u64) -> Result<Decision, StoreError> {
        tokio::task::yield_now().await;
        Ok(self.0.peek(r, k, c))
    }
    async fn refund(&self, r: &PolicySet, k: &[u8], c: u64) -> Result<(), StoreError> {
        tokio::task::yield_now().await;
        self.0.refund(r, k, c);
        Ok(())
    }
    async fn reset(&self, _: &PolicySet, k: &[u8]) -> Result<(), StoreError> {
        self.0.reset(k);
        Ok(())
    }
}
