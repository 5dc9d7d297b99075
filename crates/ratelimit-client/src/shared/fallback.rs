//! The global limit a process keeps alone while Redis cannot be asked: its share of the token's limit
//! (the limit divided by the declared instances), as a sliding log on this process's clock.

use std::collections::VecDeque;
use std::time::Instant;

use ratelimit_core::Micros;

/// Tokens tracked while degraded. Past this, the oldest logs are forgotten (a token seen again starts a
/// fresh log): one process rarely serves more tokens than this, and each log is bounded by its limit.
const TOKENS_TRACKED_WHILE_DEGRADED: usize = 1024;

type HashMap<K, V> = hashbrown::HashMap<K, V, foldhash::fast::RandomState>;

pub(super) struct Fallback {
    origin: Instant,
    logs: HashMap<u64, VecDeque<Micros>>,
}

impl Default for Fallback {
    fn default() -> Self {
        Fallback {
            origin: Instant::now(),
            logs: HashMap::default(),
        }
    }
}

impl Fallback {
    fn now(&self) -> Micros {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// Takes a slot of `limit` per `window` for `token` (`limit` 0: no global limit), or says how long
    /// until one frees.
    pub(super) fn admit(&mut self, token: u64, limit: u32, window: Micros) -> Result<(), Micros> {
        if limit == 0 {
            return Ok(());
        }
        let now = self.now();
        if !self.logs.contains_key(&token) && self.logs.len() >= TOKENS_TRACKED_WHILE_DEGRADED {
            self.logs.clear();
        }
        let log = self.logs.entry(token).or_default();
        while log
            .front()
            .is_some_and(|&t| t.saturating_add(window) <= now)
        {
            log.pop_front();
        }
        if log.len() >= limit as usize {
            let oldest = log.front().copied().unwrap_or(now);
            return Err(oldest.saturating_add(window).saturating_sub(now).max(1));
        }
        log.push_back(now);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_degraded_process_keeps_its_share_and_says_when_a_slot_frees() {
        let mut f = Fallback::default();
        let window = 60_000_000;
        assert!(f.admit(1, 2, window).is_ok());
        assert!(f.admit(1, 2, window).is_ok());
        let wait = f.admit(1, 2, window).expect_err("the share is spent");
        assert!(wait > 59_000_000 && wait <= window, "{wait}");
        assert!(
            f.admit(2, 2, window).is_ok(),
            "another token has its own share"
        );
        assert!(f.admit(3, 0, window).is_ok(), "no global limit");
    }
}
