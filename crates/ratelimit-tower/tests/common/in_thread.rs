//! A layer's service driven on the test's own thread: polled once with no runtime (the in-memory store
//! answers at once), its tracing events captured by a thread-local subscriber.
#![allow(dead_code)]

use std::convert::Infallible;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use ratelimit_core::{Policy, PolicySet, Quota};
use ratelimit_tower::RateLimitLayer;
use tower::{Layer, Service};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Metadata as TMeta, Subscriber};

/// Tracing's callsite interest is global, and these tests swap thread-local subscribers: run them one
/// at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Holds the other tests of this binary off until dropped (a test that failed does not block them).
pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records every event as (level, " field=value …").
#[derive(Clone, Default)]
pub struct Capture(Arc<Mutex<Vec<(Level, String)>>>);

struct Line<'a>(&'a mut String);

impl Visit for Line<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let _ = write!(self.0, " {}={:?}", field.name(), value);
    }
}

impl Subscriber for Capture {
    // Ask on every event instead of letting tracing cache the answer per callsite: the cache is global, and
    // with one thread-local subscriber per test a callsite first seen by a thread with no subscriber could
    // stay switched off for this one.
    fn register_callsite(&self, _: &'static TMeta<'static>) -> tracing::subscriber::Interest {
        tracing::subscriber::Interest::sometimes()
    }
    fn enabled(&self, _: &TMeta<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut s = String::new();
        event.record(&mut Line(&mut s));
        self.0.lock().unwrap().push((*event.metadata().level(), s));
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

impl Capture {
    /// The events at `level` that contain `needle`.
    pub fn at(&self, level: Level, needle: &str) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|(l, s)| *l == level && s.contains(needle))
            .map(|(_, s)| s.clone())
            .collect()
    }

    pub fn events(&self, level: Level, needle: &str) -> usize {
        self.at(level, needle).len()
    }

    pub fn warnings(&self, needle: &str) -> Vec<String> {
        self.at(Level::WARN, needle)
    }

    /// Asserts that `n` events at `level` contain `needle`; shows every event captured if not.
    #[track_caller]
    pub fn assert_events(&self, level: Level, needle: &str, n: usize) {
        assert_eq!(
            self.events(level, needle),
            n,
            "{level} events containing {needle:?}; all events:\n{}",
            self.all()
        );
    }

    /// Every event, one a line.
    pub fn all(&self) -> String {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|(_, s)| s.clone())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// `layer` around a service that answers every request 200 "ok".
pub fn service(
    layer: &RateLimitLayer,
) -> impl Service<
    Request<()>,
    Response = Response<ratelimit_tower::ResponseBody<Full<Bytes>>>,
    Error = Infallible,
> {
    layer.layer(tower::service_fn(|_req: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
    }))
}

/// One fixed-window policy, "hourly", of `n` an hour.
pub fn hourly(n: u64) -> PolicySet {
    PolicySet::new([Policy::fixed_window("hourly", Quota::per_hour(n).build().unwrap()).unwrap()])
        .unwrap()
}
