//! Helpers shared by the simulator's tests: one request over real HTTP on loopback.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use http::{HeaderMap, Method, StatusCode};

/// A response: status, headers, body text.
pub struct Resp {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Resp {
    /// A header as a string (panics when absent).
    pub fn h(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("missing header {name}: {:?}", self.headers))
            .to_str()
            .unwrap()
    }

    pub fn has(&self, name: &str) -> bool {
        self.headers.contains_key(name)
    }

    pub fn f(&self, name: &str) -> f64 {
        self.h(name).parse().unwrap()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

/// Sends `method base+path` with `Authorization: Bot <token>` when given.
pub async fn send(
    client: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> Resp {
    let mut req = client.request(method, format!("{base}{path}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bot {t}"));
    }
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_owned());
    }
    let resp = req.send().await.expect("request failed");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.text().await.unwrap();
    Resp {
        status,
        headers,
        body,
    }
}

/// Sends with the default token.
pub async fn bot(client: &reqwest::Client, base: &str, method: Method, path: &str) -> Resp {
    send(
        client,
        base,
        method,
        path,
        Some(discord_sim::DEFAULT_TOKEN),
        None,
    )
    .await
}
