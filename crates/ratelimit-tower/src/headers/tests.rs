//! The header writers against the draft, parsed back with the `sfv` crate.

use super::bytes::*;
use super::draft::*;
use super::fields::*;
use ratelimit_core::{Policy, PolicySet, Quota, Rule};

fn set() -> PolicySet {
    PolicySet::new([
        Policy::gcra("burst", Quota::per_second(2).build().unwrap()).unwrap(),
        Policy::fixed_window("daily", Quota::per_day(1000).build().unwrap()).unwrap(),
    ])
    .unwrap()
}

#[test]
fn rounding_up_never_zero_when_waiting() {
    assert_eq!(ceil_secs(0), 0);
    assert_eq!(ceil_secs(1), 1);
    assert_eq!(ceil_secs(1_000_000), 1);
    assert_eq!(ceil_secs(1_000_001), 2);
    let s = set();
    let mut st = Default::default();
    s.check(&mut st, 0, 2);
    let d = s.check(&mut st, 0, 1);
    assert!(d.is_limited());
    assert_eq!(retry_after_secs(&d), Some(1)); // 500 ms → 1, not 0
}

#[test]
fn fields_parse_as_sf_lists() {
    use sfv::{BareItem, ListEntry, Parser};
    let s = set();
    let mut st = Default::default();
    let d = s.check(&mut st, 0, 1);
    let v = ratelimit_value(&s, &d, None, Some(&[1; 12])).unwrap();
    let list = Parser::new(v.to_str().unwrap())
        .parse::<sfv::List>()
        .unwrap();
    assert_eq!(list.len(), 2);
    let ListEntry::Item(item) = &list[0] else {
        panic!()
    };
    assert_eq!(
        item.bare_item,
        BareItem::String(sfv::String::from_string("burst".into()).unwrap())
    );
    let p = policy_value(&s, Some(1), None).unwrap();
    assert_eq!(p.to_str().unwrap(), "\"daily\";q=1000;w=86400");
}

/// Draft-06/-07 shapes: the policy list holds Integers with a `w` parameter, the draft-07 field is a
/// Dictionary of three Integers; both in canonical form, and consistent with the decision.
#[test]
fn earlier_revisions_parse_as_their_structured_types() {
    use sfv::{BareItem, FieldType, ListEntry, Parser};
    let s = set();
    let mut st = Default::default();
    s.check(&mut st, 0, 2);
    let limited = s.check(&mut st, 0, 1);
    assert!(limited.is_limited());
    let mut b = Buf::new();
    write_policy_unnamed(&mut b, &s, None);
    let text = std::str::from_utf8(b.as_bytes()).unwrap();
    let list = Parser::new(text).parse::<sfv::List>().unwrap();
    assert_eq!(FieldType::serialize(&list).as_deref(), Some(text));
    let items: Vec<(i64, i64)> = list
        .iter()
        .map(|e| {
            let ListEntry::Item(item) = e else {
                panic!("{text}")
            };
            let q = match item.bare_item {
                BareItem::Integer(i) => i64::from(i),
                ref other => panic!("{other:?}"),
            };
            match item.params.get("w") {
                Some(BareItem::Integer(w)) => (q, i64::from(*w)),
                other => panic!("w: {other:?}"),
            }
        })
        .collect();
    assert_eq!(items, [(2, 1), (1000, 86400)]);

    let v = draft07_value(&limited).unwrap();
    let text = v.to_str().unwrap();
    let dict = Parser::new(text).parse::<sfv::Dictionary>().unwrap();
    assert_eq!(FieldType::serialize(&dict).as_deref(), Some(text));
    let member = |k: &str| match dict.get(k) {
        Some(ListEntry::Item(item)) => match item.bare_item {
            BareItem::Integer(i) => i64::from(i),
            ref other => panic!("{k}: {other:?}"),
        },
        other => panic!("{k}: {other:?}"),
    };
    let (limit, remaining, reset) = binding_numbers(&limited);
    assert_eq!(
        (member("limit"), member("remaining"), member("reset")),
        (limit as i64, remaining as i64, reset as i64)
    );
    // Limited: reset is when the request would be admitted, never earlier than Retry-After.
    assert_eq!((limit, remaining), (2, 0));
    assert!(reset >= retry_after_secs(&limited).unwrap() && reset >= 1);
}

/// A bucket whose burst exceeds its limit advertises its capacity as `q` (over the time the sustained
/// rate takes to grant it), so `r` — which counts down from the burst — never exceeds `q`.
#[test]
fn remaining_never_exceeds_the_advertised_quota() {
    use sfv::{BareItem, ListEntry, Parser};
    let param = |value: &str, name: &str| -> i64 {
        let list = Parser::new(value).parse::<sfv::List>().unwrap();
        let ListEntry::Item(item) = &list[0] else {
            panic!("{value}")
        };
        match item.params.get(name) {
            Some(BareItem::Integer(i)) => i64::from(*i),
            other => panic!("{name} in {value}: {other:?}"),
        }
    };
    for (policy, q, w) in [
        (
            Policy::gcra("hourly", Quota::per_hour(100).burst(200).build().unwrap()).unwrap(),
            200,
            7200,
        ),
        (
            Policy::token_bucket("b", Quota::per_second(3).burst(10).build().unwrap()).unwrap(),
            10,
            4,
        ),
        (
            Policy::gcra("small", Quota::per_minute(60).burst(5).build().unwrap()).unwrap(),
            5,
            5,
        ),
        (
            Policy::sliding_window("w", Quota::per_minute(60).build().unwrap()).unwrap(),
            60,
            60,
        ),
    ] {
        let s = PolicySet::new([policy]).unwrap();
        let pv = policy_value(&s, None, None).unwrap();
        let pv = pv.to_str().unwrap();
        assert_eq!((param(pv, "q"), param(pv, "w")), (q, w), "{pv}");
        let mut st = Default::default();
        let mut now = 0;
        for _ in 0..3 * q {
            let d = s.check(&mut st, now, 1);
            let r = ratelimit_value(&s, &d, None, None).unwrap();
            assert!(param(r.to_str().unwrap(), "r") <= q, "{r:?} with {pv}");
            now += 100_000;
        }
    }
}

#[test]
fn digits_and_prefixed_items_match_the_plain_rendering() {
    for v in [
        0,
        1,
        9,
        10,
        99,
        100,
        101,
        999,
        1000,
        12_345,
        999_999_999_999_999,
        u64::MAX,
    ] {
        let mut b = Buf::new();
        b.push_u64(v);
        assert_eq!(b.as_bytes(), v.to_string().as_bytes());
        // Near the end of the stack buffer, and past it (the heap).
        for fill in [240, 250, 300] {
            let mut b = Buf::new();
            b.push(&vec![b'x'; fill]);
            b.push_u64(v);
            assert_eq!(&b.as_bytes()[fill..], v.to_string().as_bytes());
        }
    }
    let s = set();
    let prefixes = item_prefixes(&s);
    let mut st = Default::default();
    for (now, cost) in [(0, 1), (0, 1), (0, 5), (1_500_000, 1), (0, 2000)] {
        let d = s.check(&mut st, now, cost);
        for pk in [None, Some(&[7u8; 12])] {
            let mut a = Buf::new();
            write_ratelimit(&mut a, &s, &d, None, pk);
            let mut b = Buf::new();
            write_ratelimit_items(&mut b, &prefixes, &d, pk);
            assert_eq!(a.as_bytes(), b.as_bytes());
        }
    }
}

#[test]
fn once_rendered_values_are_interned_statics() {
    let mut b = Buf::new();
    write_policy(&mut b, &set(), None, None);
    let (x, y) = (b.static_value().unwrap(), b.static_value().unwrap());
    assert_eq!(x, b.value().unwrap());
    // One leaked copy, shared by every clone and every later rendering of the same value.
    assert_eq!(x.as_bytes().as_ptr(), y.as_bytes().as_ptr());
    assert_eq!(x.as_bytes().as_ptr(), x.clone().as_bytes().as_ptr());
    // obs-text is a valid header value but `from_static` would panic on it: not interned, not lost.
    let mut odd = Buf::new();
    odd.push(b"caf\xe9");
    assert_eq!(odd.static_value().unwrap().as_bytes(), b"caf\xe9");
    let mut bad = Buf::new();
    bad.push(b"a\nb");
    assert!(bad.static_value().is_none());
}

#[test]
fn interning_stops_at_its_cap_and_values_stay_whole() {
    let table = Interned::new(None);
    let caps = InternCaps {
        values: 4,
        bytes: usize::MAX,
    };
    let value = |i: u64| format!("\"cap-test\";q={i}");
    for i in 0..4 {
        let v = intern_in(&table, caps, value(i).as_bytes()).unwrap();
        assert_eq!(v.as_bytes(), value(i).as_bytes());
    }
    // Known values are still shared; past the cap a new value is a plain (reference-counted) one:
    // two renderings, two copies, the same bytes.
    let known = [0, 0].map(|_| intern_in(&table, caps, value(1).as_bytes()).unwrap());
    assert_eq!(known[0].as_bytes().as_ptr(), known[1].as_bytes().as_ptr());
    let past = [0, 0].map(|_| intern_in(&table, caps, value(9).as_bytes()).unwrap());
    assert_eq!(past[0], past[1]);
    assert_eq!(past[0].as_bytes(), value(9).as_bytes());
    assert_ne!(past[0].as_bytes().as_ptr(), past[1].as_bytes().as_ptr());
    assert_eq!(
        table.lock().unwrap().as_ref().map(|t| t.values.len()),
        Some(4)
    );
}

/// A flood of long distinct values (policy names built from outside data) leaks at most the byte cap,
/// whatever the value cap; every value still comes back whole.
#[test]
fn interning_leaks_at_most_its_byte_cap() {
    const BYTE_CAP: usize = 64 * 1024;
    const LONG_VALUE: usize = 10_000;
    let table = Interned::new(None);
    let caps = InternCaps {
        values: MAX_INTERNED,
        bytes: BYTE_CAP,
    };
    // Ten times what fits: far below the value cap, so only the byte cap can stop them.
    for i in 0..10 * BYTE_CAP / LONG_VALUE {
        let v = format!("\"{i:0>width$}\";q=1", width = LONG_VALUE);
        assert_eq!(
            intern_in(&table, caps, v.as_bytes()).unwrap().as_bytes(),
            v.as_bytes()
        );
    }
    let t = table.lock().unwrap();
    let t = t.as_ref().unwrap();
    let leaked: usize = t.values.iter().map(|v| v.len()).sum();
    assert_eq!(leaked, t.bytes);
    assert!(leaked <= BYTE_CAP, "{leaked} bytes leaked");
    assert_eq!(t.values.len(), BYTE_CAP / (LONG_VALUE + 6));
}

#[test]
fn base64_matches_reference() {
    let mut out = [0u8; 16];
    base64_12(b"hello world!", &mut out);
    assert_eq!(&out, b"aGVsbG8gd29ybGQh");
}
