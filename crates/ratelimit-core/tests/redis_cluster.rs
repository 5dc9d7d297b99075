//! The Redis store on a local 3-master Redis Cluster: multi-policy checks are one script call with every
//! key in one slot (no CROSSSLOT), identities spread over every node, and SCRIPT/FUNCTION FLUSH on all
//! nodes is recovered from.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::Duration;

use ratelimit_core::{Outcome, Policy, PolicySet, Quota, RedisStore, Store};
use ratelimit_test_support::redis_server::RedisCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_policy_checks_work_across_a_three_master_cluster() {
    let cluster = RedisCluster::start();
    let urls = cluster.urls();
    let urls: Vec<&str> = urls.iter().map(String::as_str).collect();
    let store = RedisStore::builder()
        .timeout(Duration::from_secs(2))
        .connect_cluster(&urls)
        .await
        .unwrap();
    let q = |n| Quota::per_hour(n).build().unwrap();
    let set = PolicySet::new([
        Policy::gcra("burst", q(3)).unwrap(),
        Policy::sliding_log("log", q(4)).unwrap(),
        Policy::sliding_window("sw", q(5)).unwrap(),
        Policy::fixed_window("fw", Quota::per_day(6).build().unwrap()).unwrap(),
    ])
    .unwrap();
    for user in 0..60 {
        let key = format!("user-{user}");
        for i in 0..4 {
            let d = Store::<str, PolicySet>::check(&store, &set, &key, 1)
                .await
                .unwrap();
            assert_eq!(d.is_allowed(), i < 3, "{key} check {i}");
            if i == 3 {
                assert_eq!(d.outcome(), Outcome::Limited);
                assert_eq!(set.policy(d.binding_index()).name(), "burst");
            }
        }
    }
    // Every policy of one identity shares a slot; identities spread over all three masters.
    let mut slots = HashSet::new();
    for user in 0..60 {
        let id = format!("user-{user}");
        let per_identity: HashSet<String> = set
            .policies()
            .iter()
            .map(|p| {
                let key = store.key_for(id.as_bytes(), p);
                cluster.nodes[0]
                    .cli(&["CLUSTER", "KEYSLOT", &key])
                    .trim()
                    .to_owned()
            })
            .collect();
        assert_eq!(per_identity.len(), 1, "{id}: one slot for all its policies");
        slots.extend(per_identity);
    }
    assert!(slots.len() > 30, "identities spread over slots");
    for node in &cluster.nodes {
        let n: u64 = node.cli(&["DBSIZE"]).trim().parse().unwrap();
        assert!(n > 0, "node {} holds some identities", node.port);
    }

    // SCRIPT FLUSH everywhere: the next checks reload the script where needed and succeed.
    for node in &cluster.nodes {
        assert_eq!(node.cli(&["SCRIPT", "FLUSH"]).trim(), "OK");
        assert_eq!(node.cli(&["FUNCTION", "FLUSH"]).trim(), "OK");
    }
    for user in 100..130 {
        let d = Store::<str, PolicySet>::check(&store, &set, &format!("user-{user}"), 1)
            .await
            .unwrap();
        assert!(d.is_allowed());
    }
}
