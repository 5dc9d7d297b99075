//! Rendering of ratelimit-tower's `RateLimit` / `RateLimit-Policy` fields (draft-ietf-httpapi-ratelimit-
//! headers-11): for arbitrary quotas, decisions and partition keys the output is a canonical RFC 9651 List
//! (parsed and re-serialised identically by `sfv`), one item per policy, `r` equal to the status's
//! remaining units, and `Retry-After` never 0 when a wait is needed. The draft-06/-07 shapes too: the
//! unnamed policy List and the draft-07 Dictionary parse canonically, `remaining` is the binding policy's.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ratelimit_core::{Decision, Policy, PolicySet, Quota, Status};
use ratelimit_tower::headers::{
    draft07_value, policy_value, ratelimit_value, retry_after_secs, unnamed_policy_value,
};

fn u64_at(data: &[u8], i: usize) -> u64 {
    let mut b = [0u8; 8];
    for (k, x) in b.iter_mut().enumerate() {
        *x = data.get(i * 8 + k).copied().unwrap_or(0);
    }
    u64::from_le_bytes(b)
}

fuzz_target!(|data: &[u8]| {
    let n = usize::from(data.first().copied().unwrap_or(1) % 8) + 1;
    let mut policies = Vec::new();
    let mut statuses = Vec::new();
    for i in 0..n {
        let limit = u64_at(data, 1 + i * 5) % 1_000_000 + 1;
        let Ok(quota) = Quota::per_second(limit).build() else { return };
        let Ok(p) = Policy::gcra(&format!("p-{i}.x:y/z_{}", limit % 7), quota) else { return };
        policies.push(p);
        let retry = match u64_at(data, 2 + i * 5) % 4 {
            0 => 0,
            1 => Status::NEVER,
            _ => u64_at(data, 3 + i * 5),
        };
        statuses.push(Status {
            limit,
            remaining: u64_at(data, 4 + i * 5),
            reset: u64_at(data, 5 + i * 5),
            retry,
            delay: 0,
        });
    }
    let Ok(set) = PolicySet::new(policies) else { return };
    let decision = Decision::combine(&statuses);
    let pk = [data.last().copied().unwrap_or(0); 12];
    for pk in [None, Some(&pk)] {
        for only in [None, Some(decision.binding_index())] {
            let rl = ratelimit_value(&set, &decision, only, pk).expect("RateLimit renders");
            let pol = policy_value(&set, only, pk).expect("RateLimit-Policy renders");
            for (v, field) in [(&rl, "RateLimit"), (&pol, "RateLimit-Policy")] {
                let text = v.to_str().unwrap();
                let list: sfv::List = sfv::Parser::new(text).parse().unwrap_or_else(|e| panic!("{field} {text:?}: {e}"));
                let again: Option<String> = sfv::FieldType::serialize(&list);
                assert_eq!(again.as_deref(), Some(text), "{field} not canonical");
                assert_eq!(list.len(), if only.is_some() { 1 } else { n });
            }
            let list: sfv::List = sfv::Parser::new(rl.to_str().unwrap()).parse().unwrap();
            for (entry, (i, s)) in list.iter().zip(statuses.iter().enumerate().filter(|(i, _)| only.is_none_or(|o| o == *i))) {
                let sfv::ListEntry::Item(item) = entry else { panic!("inner list") };
                let r = item.params.get("r").and_then(|v| v.as_integer()).map(i64::from).unwrap();
                assert_eq!(r as u64, s.remaining.min(999_999_999_999_999), "policy {i}");
            }
        }
    }
    for only in [None, Some(decision.binding_index())] {
        let pol = unnamed_policy_value(&set, only).expect("unnamed RateLimit-Policy renders");
        let text = pol.to_str().unwrap();
        let list: sfv::List = sfv::Parser::new(text).parse().unwrap_or_else(|e| panic!("{text:?}: {e}"));
        let again: Option<String> = sfv::FieldType::serialize(&list);
        assert_eq!(again.as_deref(), Some(text), "unnamed RateLimit-Policy not canonical");
        assert_eq!(list.len(), if only.is_some() { 1 } else { n });
    }
    let d7 = draft07_value(&decision).expect("draft-07 RateLimit renders");
    let text = d7.to_str().unwrap();
    let dict: sfv::Dictionary = sfv::Parser::new(text).parse().unwrap_or_else(|e| panic!("{text:?}: {e}"));
    let again: Option<String> = sfv::FieldType::serialize(&dict);
    assert_eq!(again.as_deref(), Some(text), "draft-07 RateLimit not canonical");
    let remaining = match dict.get("remaining") {
        Some(sfv::ListEntry::Item(item)) => item.bare_item.as_integer().map(i64::from).unwrap(),
        other => panic!("remaining: {other:?}"),
    };
    assert_eq!(remaining as u64, decision.binding().remaining.min(999_999_999_999_999));
    if let Some(secs) = retry_after_secs(&decision) {
        assert!(secs >= 1);
    }
});
