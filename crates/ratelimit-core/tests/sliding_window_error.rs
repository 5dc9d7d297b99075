//! How far the sliding window counter (two-window approximation) strays from the exact sliding log.
//!
//! Both algorithms see the same generated traffic, each keeping its own state. We count
//!
//! * the requests on which the two decide differently (*differ from log*);
//! * the counter's *wrong* decisions: those that differ from what the exact log would decide given the
//!   counter's own admission history (the Cloudflare measure: with no feedback between the two runs);
//! * the units each admits in total, and the most it admits in any rolling period.
//!
//! Close to or above the limit most decisions sit on the margin, so any approximation is "wrong" often
//! there; what matters is that the admitted rate stays within a few percent and the rolling count within
//! the documented bound. The patterns are seeded, so the figures are reproducible:
//!
//! * **steady**: Poisson arrivals at 0.5×, 0.8×, 1.2× and 3× the limit;
//! * **bursty**: bursts of 20–150 requests within 50 ms, separated by exponential quiet gaps;
//! * **adversarial**: a burst of twice the limit 1 ms before every window boundary, and a request every
//!   millisecond in between — the pattern that drives the counter to its worst case.
//!
//! `cargo test -p ratelimit-core --test sliding_window_error -- --nocapture` prints the table that
//! `BENCHMARKS.md` quotes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ratelimit_core::{Algorithm, Micros, Quota, SlidingLog, SlidingWindow};

const LIMIT: u64 = 100;
const PERIOD: Micros = 1_000_000;
/// Periods of traffic per run.
const PERIODS: u64 = 200;

/// splitmix64: a tiny seeded generator, enough for traffic shapes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An exponential variate with the given mean, in whole microseconds.
    fn exp(&mut self, mean: f64) -> Micros {
        (-(1.0 - self.unit()).ln() * mean) as Micros
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
}

/// Poisson arrivals at `load` times the limit.
fn steady(seed: u64, load: f64) -> Vec<Micros> {
    let mut rng = Rng(seed);
    let mean_gap = PERIOD as f64 / (LIMIT as f64 * load);
    let mut t = PERIOD;
    let mut out = Vec::new();
    while t < PERIOD * (PERIODS + 1) {
        out.push(t);
        t += rng.exp(mean_gap);
    }
    out
}

/// Bursts of 20–150 requests spread over 50 ms, separated by quiet gaps of 0.5 s on average.
fn bursty(seed: u64) -> Vec<Micros> {
    let mut rng = Rng(seed);
    let mut t = PERIOD;
    let mut out = Vec::new();
    while t < PERIOD * (PERIODS + 1) {
        let n = rng.range(20, 150);
        let mut burst: Vec<Micros> = (0..n).map(|_| t + rng.range(0, 50_000)).collect();
        burst.sort_unstable();
        out.extend(burst);
        t += 50_000 + rng.exp(500_000.0);
    }
    out
}

/// Cycles of three periods: silence, then twice the limit 1 ms before the first boundary; a request every
/// millisecond through the next period; then a silent period, so the next cycle starts from a cold counter.
fn adversarial() -> Vec<Micros> {
    let mut out = Vec::new();
    for cycle in 0..PERIODS / 3 {
        let start = PERIOD + 3 * cycle * PERIOD;
        out.extend(std::iter::repeat_n(
            start + PERIOD - 1_000,
            2 * LIMIT as usize,
        ));
        out.extend((0..PERIOD / 1_000).map(|i| start + PERIOD + i * 1_000));
    }
    out
}

/// The most units admitted within any rolling period `(t − PERIOD, t]`, from the sorted admission times.
fn worst_rolling(admitted: &[Micros]) -> u64 {
    let mut j = 0;
    let mut most = 0;
    for (i, &t) in admitted.iter().enumerate() {
        while admitted[j] + PERIOD <= t {
            j += 1;
        }
        most = most.max(i - j + 1);
    }
    most as u64
}

#[derive(Debug, Default)]
struct Figures {
    requests: u64,
    differ: u64,
    wrong: u64,
    counter_admitted: u64,
    log_admitted: u64,
    counter_worst: u64,
    log_worst: u64,
}

impl Figures {
    fn disagreement(&self) -> f64 {
        self.differ as f64 / self.requests as f64
    }

    fn wrong_rate(&self) -> f64 {
        self.wrong as f64 / self.requests as f64
    }

    fn add(&mut self, other: Figures) {
        self.requests += other.requests;
        self.differ += other.differ;
        self.wrong += other.wrong;
        self.counter_admitted += other.counter_admitted;
        self.log_admitted += other.log_admitted;
        self.counter_worst = self.counter_worst.max(other.counter_worst);
        self.log_worst = self.log_worst.max(other.log_worst);
    }
}

/// Runs both algorithms over `arrivals` (sorted, cost 1 each).
fn compare(arrivals: &[Micros]) -> Figures {
    let q = Quota::new(LIMIT, std::time::Duration::from_micros(PERIOD))
        .build()
        .unwrap();
    let (counter, log) = (SlidingWindow::new(q).unwrap(), SlidingLog::new(q).unwrap());
    let (mut cs, mut ls) = (Default::default(), Default::default());
    // The exact log of what the *counter* admitted: the truth its decisions are judged against.
    let mut mirror = Default::default();
    let (mut c_adm, mut l_adm) = (Vec::new(), Vec::new());
    let (mut differ, mut wrong) = (0, 0);
    for &t in arrivals {
        let c = counter.step(&mut cs, t, 1).allowed();
        let l = log.step(&mut ls, t, 1).allowed();
        wrong += u64::from(c != log.evaluate(&mirror, t, 1).allowed());
        if c {
            log.commit(&mut mirror, t, 1);
            c_adm.push(t);
        }
        if l {
            l_adm.push(t);
        }
        differ += u64::from(c != l);
    }
    Figures {
        requests: arrivals.len() as u64,
        differ,
        wrong,
        counter_admitted: c_adm.len() as u64,
        log_admitted: l_adm.len() as u64,
        counter_worst: worst_rolling(&c_adm),
        log_worst: worst_rolling(&l_adm),
    }
}

fn report(name: &str, f: &Figures) {
    println!(
        "| {name:<20} | {:>7} | {:>6.3} % | {:>6.2} % | {:>7} | {:>7} | {:>4} ({:.2}×) | {:>4} |",
        f.requests,
        100.0 * f.wrong_rate(),
        100.0 * f.disagreement(),
        f.counter_admitted,
        f.log_admitted,
        f.counter_worst,
        f.counter_worst as f64 / LIMIT as f64,
        f.log_worst,
    );
}

#[test]
fn sliding_window_error_against_the_exact_log() {
    println!(
        "\nsliding window counter vs exact sliding log: limit {LIMIT} per {} s, {PERIODS} periods per run, seeds 1-3",
        PERIOD / 1_000_000
    );
    println!(
        "| pattern | requests | counter wrong | differ from log | counter admitted | log admitted | counter worst period | log worst |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let mut all = Vec::new();
    for (name, load) in [
        ("steady 0.5× limit", 0.5),
        ("steady 0.8× limit", 0.8),
        ("steady 1.2× limit", 1.2),
        ("steady 3× limit", 3.0),
    ] {
        let mut f = Figures::default();
        for seed in 1..=3 {
            f.add(compare(&steady(seed, load)));
        }
        report(name, &f);
        all.push((name, f));
    }
    let mut f = Figures::default();
    for seed in 1..=3 {
        f.add(compare(&bursty(seed)));
    }
    report("bursty", &f);
    all.push(("bursty", f));
    let f = compare(&adversarial());
    report("adversarial", &f);
    all.push(("adversarial", f));

    for (name, f) in &all {
        // The exact log never exceeds the limit in any rolling period; the counter never exceeds twice it.
        assert!(
            f.log_worst <= LIMIT,
            "{name}: the log admitted {} in a period",
            f.log_worst
        );
        assert!(
            f.counter_worst <= 2 * LIMIT,
            "{name}: the counter admitted {} in a period",
            f.counter_worst
        );
    }
    // Steady traffic below the limit (the ordinary case): few decisions differ, and the counter's
    // admitted total stays within 2 % of the exact log's at every load.
    for (name, f) in &all[..2] {
        assert!(
            f.disagreement() < 0.02 && f.wrong_rate() < 0.03,
            "{name}: {:.2} % of decisions differ from the log, {:.2} % wrong",
            100.0 * f.disagreement(),
            100.0 * f.wrong_rate()
        );
    }
    for (name, f) in &all[..4] {
        let ratio = f.counter_admitted as f64 / f.log_admitted as f64;
        assert!(
            (0.98..=1.02).contains(&ratio),
            "{name}: the counter admitted {ratio:.3}× what the log did"
        );
    }
    // The adversarial pattern really is the worst case: well above the limit, close to the bound.
    let adv = &all[5].1;
    assert!(
        adv.counter_worst > 3 * LIMIT / 2,
        "adversarial pattern only reached {}",
        adv.counter_worst
    );
}
