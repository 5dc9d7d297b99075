//! The Lua step behind every shared-state call, the arguments it takes and the replies it may give.
//!
//! Replies come from the network: each is checked against what the script can answer (its shape, the
//! request id it must echo, values within range) before anything is believed.

use redis::Value;

use ratelimit_core::Micros;

/// The source of the one script (`reserve`, `reconcile` and `release` are its operations).
pub(super) const SOURCE: &str = include_str!("shared.lua");

/// No wait the script computes can legitimately exceed a day: a longer one is a corrupt value.
const LONGEST_BELIEVABLE_WAIT: Micros = 86_400_000_000;

/// Counter names are bounded by the caller before they are written; a longer one read back is not ours.
const LONGEST_COUNTER_NAME: usize = 1024;

/// What a reservation answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply {
    /// Admitted at `at` (µs on the server's clock), drawing on `counter` (empty: none, or probing the
    /// route; the probe flag is checked, and the route's probe lock says it).
    Admit { at: Micros, counter: String },
    /// Try again in this many µs.
    Wait(Micros),
    /// The egress identity is banned for this many µs.
    Banned(Micros),
    /// The invalid-request budget is spent: this many invalid responses in its window.
    Stopped(u64),
    /// The route has sub-limits on body shapes: ask again naming the request's shape.
    NeedShape,
}

/// Why a reply was not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum BadReply {
    #[error("the reply is not the script's array: {0}")]
    Shape(&'static str),
    #[error("the reply answers another request (its id is not this call's)")]
    Foreign,
    #[error("the reply carries a value out of range: {0}")]
    Range(&'static str),
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

fn text(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}

/// The elements of a reservation's reply, which echoes `id` third.
fn own<'v>(reply: &'v Value, id: &str) -> Result<&'v [Value], BadReply> {
    let Value::Array(items) = reply else {
        return Err(BadReply::Shape("not an array"));
    };
    match items.get(2).map(text) {
        None => Err(BadReply::Shape("fewer than three elements")),
        Some(echoed) if echoed == Some(id.as_bytes()) => Ok(items),
        Some(_) => Err(BadReply::Foreign),
    }
}

/// Reads a reservation's reply.
pub(crate) fn reserve_reply(reply: &Value, id: &str) -> Result<Reply, BadReply> {
    let items = own(reply, id)?;
    let kind = items
        .first()
        .and_then(int)
        .ok_or(BadReply::Shape("no status"))?;
    let value = items
        .get(1)
        .and_then(int)
        .ok_or(BadReply::Shape("no value"))?;
    let value = u64::try_from(value).map_err(|_| BadReply::Range("negative"))?;
    let wait = |v: u64| {
        (1..=LONGEST_BELIEVABLE_WAIT)
            .contains(&v)
            .then_some(v)
            .ok_or(BadReply::Range("a wait outside 1 µs ..= 1 day"))
    };
    match (kind, items.len()) {
        (0, 5) => {
            let counter = text(&items[3]).ok_or(BadReply::Shape("counter is not a string"))?;
            if counter.len() > LONGEST_COUNTER_NAME {
                return Err(BadReply::Range("counter name too long"));
            }
            let counter = std::str::from_utf8(counter)
                .map_err(|_| BadReply::Range("counter name is not UTF-8"))?
                .to_owned();
            if !matches!(int(&items[4]), Some(0 | 1)) {
                return Err(BadReply::Range("probe flag is not 0 or 1"));
            }
            if value == 0 {
                return Err(BadReply::Range("admitted at time 0"));
            }
            Ok(Reply::Admit { at: value, counter })
        }
        (1, 3) => Ok(Reply::Wait(wait(value)?)),
        (2, 3) => Ok(Reply::Banned(wait(value)?)),
        (3, 3) => Ok(Reply::Stopped(value)),
        (4, 3) if value == 1 => Ok(Reply::NeedShape),
        _ => Err(BadReply::Shape("unknown status or length")),
    }
}

/// Reads the reply of a `reconcile` or `release`: only the echoed id.
pub(crate) fn done_reply(reply: &Value, id: &str) -> Result<(), BadReply> {
    match reply {
        Value::Array(items) => match items.as_slice() {
            [echoed] if text(echoed) == Some(id.as_bytes()) => Ok(()),
            [_] => Err(BadReply::Foreign),
            _ => Err(BadReply::Shape("not a one-element array")),
        },
        _ => Err(BadReply::Shape("not an array")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn an_admission_is_read_with_its_counter() {
        let r = Value::Array(vec![
            Value::Int(0),
            bulk("1700000000000000"),
            bulk("r1"),
            bulk("ab|#h|1"),
            Value::Int(1),
        ]);
        assert_eq!(
            reserve_reply(&r, "r1"),
            Ok(Reply::Admit {
                at: 1_700_000_000_000_000,
                counter: "ab|#h|1".into(),
            })
        );
    }

    #[test]
    fn a_reply_echoing_another_id_is_never_believed() {
        let r = Value::Array(vec![Value::Int(1), bulk("5"), bulk("r2")]);
        assert_eq!(reserve_reply(&r, "r1"), Err(BadReply::Foreign));
        assert_eq!(
            done_reply(&Value::Array(vec![bulk("r2")]), "r1"),
            Err(BadReply::Foreign)
        );
        assert_eq!(done_reply(&Value::Array(vec![bulk("r1")]), "r1"), Ok(()));
    }

    #[test]
    fn waits_out_of_range_and_unknown_statuses_are_refused() {
        let wait = |v: &str| Value::Array(vec![Value::Int(1), bulk(v), bulk("r")]);
        assert!(reserve_reply(&wait("0"), "r").is_err());
        assert!(reserve_reply(&wait("-3"), "r").is_err());
        assert!(reserve_reply(&wait("86400000001"), "r").is_err());
        assert_eq!(reserve_reply(&wait("250"), "r"), Ok(Reply::Wait(250)));
        let odd = Value::Array(vec![Value::Int(9), bulk("1"), bulk("r")]);
        assert!(reserve_reply(&odd, "r").is_err());
        assert!(reserve_reply(&Value::Nil, "r").is_err());
        assert!(reserve_reply(&Value::Array(vec![]), "r").is_err());
    }

    proptest::proptest! {
        #[test]
        fn no_reply_makes_the_reader_panic(kind in -2i64..6, v in proptest::prelude::any::<i64>(), n in 0usize..7, s in ".{0,8}") {
            let mut items = vec![Value::Int(kind), Value::Int(v), bulk(&s), bulk(&s), Value::Int(v)];
            items.truncate(n);
            let _ = reserve_reply(&Value::Array(items.clone()), "r");
            let _ = done_reply(&Value::Array(items), "r");
        }
    }
}
