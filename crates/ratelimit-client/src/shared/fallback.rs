//! The global limit a process keeps alone while Redis cannot be asked: its share of the token's limit
//! (the limit divided by the declared instances), as a sliding log on this process's clock. As in Redis,
//! a slot is held until one window after its request ended: the upstream counts a request when it
//! arrives, at an unknown moment before its response.

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
    /// until one frees. `Some(stamp)`: the slot, to hand to [`ended`](Self::ended); `None`: no limit.
    pub(super) fn admit(
        &mut self,
        token: u64,
        limit: u32,
        window: Micros,
    ) -> Result<Option<Micros>, Micros> {
        if limit == 0 {
            return Ok(None);
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
        Ok(Some(now))
    }

    /// The request admitted at `stamp` ended (answered, failed or dropped): its slot is held one window
    /// from now instead. A log forgotten meanwhile (too many tokens) is left alone.
    pub(super) fn ended(&mut self, token: u64, stamp: Micros) {
        let now = self.now();
        let Some(log) = self.logs.get_mut(&token) else {
            return;
        };
        // The log is in admission order; a slot already expired (a request out for longer than a
        // window) is taken again, since the upstream may have counted it only now.
        if let Ok(i) = log.binary_search(&stamp) {
            log.remove(i);
        }
        log.push_back(now.max(stamp));
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
        assert_eq!(f.admit(3, 0, window), Ok(None), "no global limit");
    }

    #[test]
    fn a_slot_is_held_one_window_after_its_request_ended() {
        let mut f = Fallback::default();
        let window = 20_000;
        let stamp = f.admit(1, 1, window).unwrap().unwrap();
        std::thread::sleep(std::time::Duration::from_micros(window / 2));
        f.ended(1, stamp);
        std::thread::sleep(std::time::Duration::from_micros(window * 3 / 4));
        let wait = f
            .admit(1, 1, window)
            .expect_err("a window after admission, but not after the end");
        assert!(wait <= window, "{wait}");
        std::thread::sleep(std::time::Duration::from_micros(wait));
        assert!(f.admit(1, 1, window).is_ok());
    }
}
