//! A `metrics` recorder for tests: counts counter increments and histogram records by rendered key
//! (`name,label=value,...`).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};

/// Counts counter increments and histogram records by rendered key.
#[derive(Clone, Default)]
pub struct Metrics(Arc<Mutex<HashMap<String, f64>>>);

struct Handle(Arc<Mutex<HashMap<String, f64>>>, String);

impl metrics::CounterFn for Handle {
    fn increment(&self, v: u64) {
        *self.0.lock().unwrap().entry(self.1.clone()).or_default() += v as f64;
    }
    fn absolute(&self, _: u64) {}
}

impl metrics::HistogramFn for Handle {
    fn record(&self, _: f64) {
        *self.0.lock().unwrap().entry(self.1.clone()).or_default() += 1.0;
    }
}

fn render(key: &Key) -> String {
    let mut s = key.name().to_owned();
    for l in key.labels() {
        let _ = write!(s, ",{}={}", l.key(), l.value());
    }
    s
}

impl Recorder for Metrics {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(Arc::new(Handle(self.0.clone(), render(key))))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(Arc::new(Handle(self.0.clone(), render(key))))
    }
}

impl Metrics {
    pub fn get(&self, key: &str) -> f64 {
        self.0.lock().unwrap().get(key).copied().unwrap_or(0.0)
    }
}
