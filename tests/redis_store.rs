//! Integration tests of `RedisStore` against real servers started by `.ci/redis.sh`:
//!
//!     bash .ci/redis.sh cargo test --features redis --test redis_store
//!
//! Without `COGWHEEL_REDIS_URL` (and `COGWHEEL_REDIS_CLUSTER_URLS` for the cluster tests) each
//! test prints why it is skipped and passes.
#![cfg(feature = "redis")]

mod support;

use support::eventually;

use cogwheel::store::{
    BackingStore, Codec, PostcardCodec, RedisConfig, RedisStore, StoreErrorKind, Stored, WriteOp,
};
use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

/// The restart test stops the shared single server: it takes this lock for writing, every other
/// single-node test for reading.
static SINGLE: RwLock<()> = RwLock::new(());

fn single_url() -> Option<String> {
    let u = std::env::var("COGWHEEL_REDIS_URL")
        .ok()
        .filter(|u| !u.is_empty());
    if u.is_none() {
        println!("skipped: COGWHEEL_REDIS_URL not set (run through .ci/redis.sh)");
    }
    u
}

/// The resharding test moves a slot between primaries: it takes this lock for writing, every
/// other cluster test for reading (a pipeline caught mid-move would fail).
static CLUSTER: RwLock<()> = RwLock::new(());

fn cluster_urls() -> Option<Vec<String>> {
    let u = std::env::var("COGWHEEL_REDIS_CLUSTER_URLS")
        .ok()
        .filter(|u| !u.is_empty());
    if u.is_none() {
        println!("skipped: COGWHEEL_REDIS_CLUSTER_URLS not set (run through .ci/redis.sh)");
    }
    u.map(|u| u.split(',').map(str::to_string).collect())
}

fn prefix(test: &str) -> String {
    support::prefix("cwtest", test)
}

type Store = RedisStore<String, String>;

fn put<'a>(key: &'a String, value: &'a String) -> WriteOp<'a, String, String> {
    WriteOp::Put {
        key,
        value,
        expires_at: None,
    }
}

fn scan_all(s: &Store) -> BTreeMap<String, Stored<String>> {
    let mut out = BTreeMap::new();
    s.scan(&mut |item| {
        let (k, v) = item.unwrap();
        assert!(out.insert(k, v).is_none(), "scan visited a key twice");
        true
    })
    .unwrap();
    out
}

/// Round trip, ordered batch, delete of an absent key, TTL, scan: the shared contract.
fn contract(s: &Store, raw: &mut dyn FnMut(&[u8]) -> i64) {
    let (a, b, c) = ("a".to_string(), "b".to_string(), "c".to_string());
    let (one, two, three) = ("1".to_string(), "2".to_string(), "3".to_string());
    assert_eq!(s.load(&a).unwrap(), None);
    s.write_batch(&[put(&a, &one)]).unwrap();
    assert_eq!(
        s.load(&a).unwrap(),
        Some(Stored {
            value: one.clone(),
            expires_at: None
        })
    );

    s.write_batch(&[
        put(&b, &one),
        put(&b, &two),
        WriteOp::Delete { key: &b },
        put(&b, &three),
        put(&c, &one),
        WriteOp::Delete { key: &c },
        WriteOp::Delete {
            key: &"absent".to_string(),
        },
    ])
    .unwrap();
    assert_eq!(s.load(&b).unwrap().unwrap().value, three);
    assert_eq!(s.load(&c).unwrap(), None);
    s.write_batch(&[]).unwrap();

    // A deadline becomes a Redis expiry and round-trips exactly; a past one is a delete.
    let t = "ttl".to_string();
    let later = SystemTime::now() + Duration::new(30, 987_654_321);
    s.write_batch(&[WriteOp::Put {
        key: &t,
        value: &two,
        expires_at: Some(later),
    }])
    .unwrap();
    assert_eq!(
        s.load(&t).unwrap(),
        Some(Stored {
            value: two.clone(),
            expires_at: Some(later)
        })
    );
    let pttl = raw(&t_key(s, &t));
    assert!((29_000..=31_000).contains(&pttl), "PTTL {pttl}");
    assert_eq!(raw(&t_key(s, &a)), -1, "no deadline, no expiry");
    s.write_batch(&[WriteOp::Put {
        key: &a,
        value: &two,
        expires_at: Some(SystemTime::now() - Duration::from_secs(1)),
    }])
    .unwrap();
    assert_eq!(s.load(&a).unwrap(), None);
    assert_eq!(raw(&t_key(s, &a)), -2, "an expired put deletes the key");

    // Scan: every live entry under the prefix, once.
    let keys: Vec<String> = (0..300).map(|i| format!("k{i:03}")).collect();
    let ops: Vec<_> = keys.iter().map(|k| put(k, k)).collect();
    s.write_batch(&ops).unwrap();
    let all = scan_all(s);
    assert_eq!(all.len(), 302, "300 + b + ttl");
    assert_eq!(all["k123"].value, "k123");
    assert_eq!(all[&t].expires_at, Some(later));
    let mut n = 0;
    s.scan(&mut |_| {
        n += 1;
        n < 5
    })
    .unwrap();
    assert_eq!(n, 5, "scan stops when the visitor says so");
}

fn t_key(s: &Store, k: &String) -> Vec<u8> {
    let mut out = s.config().prefix.clone();
    out.extend(PostcardCodec::new().encode_key(k).unwrap());
    out
}

#[test]
fn single_node_contract() {
    let Some(url) = single_url() else { return };
    let _g = SINGLE.read().unwrap();
    let s = Store::open(RedisConfig::single(&url).prefix(prefix("contract"))).unwrap();
    let mut con = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    contract(&s, &mut |k| {
        redis::cmd("PTTL").arg(k).query(&mut con).unwrap()
    });
}

/// A plain connection to one node, for writing what the store did not.
fn raw(url: &str) -> redis::Connection {
    redis::Client::open(url).unwrap().get_connection().unwrap()
}

/// A single-node store (prefix named after `test`) holding records "a" and "b", and a plain
/// connection to its server.
fn store_with_a_and_b(url: &str, test: &str) -> (Store, redis::Connection) {
    let s = Store::open(RedisConfig::single(url).prefix(prefix(test))).unwrap();
    let (a, b) = ("a".to_string(), "b".to_string());
    s.write_batch(&[put(&a, &a), put(&b, &b)]).unwrap();
    (s, raw(url))
}

#[test]
fn a_corrupt_record_is_visited_as_an_error_and_the_scan_goes_on() {
    let Some(url) = single_url() else { return };
    let _g = SINGLE.read().unwrap();
    let (s, mut con) = store_with_a_and_b(&url, "corrupt");
    let () = redis::cmd("SET")
        .arg(t_key(&s, &"bad".to_string()))
        .arg(&[7u8, 0, 1][..])
        .query(&mut con)
        .unwrap();
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    s.scan(&mut |item| {
        match item {
            Ok((k, _)) => good.push(k),
            Err(e) => bad.push(e.kind()),
        }
        true
    })
    .unwrap();
    good.sort();
    assert_eq!(good, ["a", "b"]);
    assert_eq!(bad, vec![StoreErrorKind::Fail]);
}

#[test]
fn another_clients_non_string_key_under_the_prefix_does_not_stop_a_scan() {
    let Some(url) = single_url() else { return };
    let _g = SINGLE.read().unwrap();
    let (s, mut con) = store_with_a_and_b(&url, "wrongtype");
    // A hash under the prefix: a GET of it fails with WRONGTYPE.
    let () = redis::cmd("HSET")
        .arg(t_key(&s, &"zzz".to_string()))
        .arg("f")
        .arg("v")
        .query(&mut con)
        .unwrap();
    let found = scan_all(&s);
    assert_eq!(found.keys().cloned().collect::<Vec<_>>(), ["a", "b"]);
}

#[test]
fn a_non_string_key_does_not_stop_a_cluster_scan_either() {
    let Some(urls) = cluster_urls() else { return };
    let _shared = CLUSTER.read().unwrap_or_else(|e| e.into_inner());
    let s = Store::open(RedisConfig::cluster(urls.clone()).prefix(prefix("wrongtype"))).unwrap();
    let keys: Vec<String> = (0..20).map(|i| format!("k{i}")).collect();
    let puts: Vec<_> = keys.iter().map(|k| put(k, k)).collect();
    s.write_batch(&puts).unwrap();
    let mut con = redis::cluster::ClusterClient::new(urls)
        .unwrap()
        .get_connection()
        .unwrap();
    let () = redis::cmd("HSET")
        .arg(t_key(&s, &"zzz".to_string()))
        .arg("f")
        .arg("v")
        .query(&mut con)
        .unwrap();
    let mut found: Vec<String> = scan_all(&s).into_keys().collect();
    found.sort();
    let mut want = keys.clone();
    want.sort();
    assert_eq!(found, want);
}

#[test]
fn a_scan_that_stops_early_does_not_enumerate_the_rest_first() {
    let Some(url) = single_url() else { return };
    // Alone on the single server: the SCAN calls counted here are this test's.
    let _alone = SINGLE.write().unwrap_or_else(|e| e.into_inner());
    let mut config = RedisConfig::single(&url).prefix(prefix("early"));
    config.scan_count = 10;
    let s = Store::open(config).unwrap();
    let keys: Vec<String> = (0..500).map(|i| format!("k{i}")).collect();
    let puts: Vec<_> = keys.iter().map(|k| put(k, k)).collect();
    s.write_batch(&puts).unwrap();
    let mut con = raw(&url);
    let mut scans = || -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut con)
            .unwrap();
        info.lines()
            .find_map(|l| l.strip_prefix("cmdstat_scan:calls="))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    };
    let before = scans();
    assert_eq!(scan_all(&s).len(), 500);
    let full = scans() - before;
    let before = scans();
    let mut seen = 0;
    s.scan(&mut |item| {
        item.unwrap();
        seen += 1;
        seen < 5
    })
    .unwrap();
    let early = scans() - before;
    assert_eq!(seen, 5);
    assert!(
        early * 4 < full,
        "{early} SCAN calls to stop after 5 records, {full} for all"
    );
}

#[test]
fn prefixes_isolate_stores() {
    let Some(url) = single_url() else { return };
    let _g = SINGLE.read().unwrap();
    let p = prefix("iso");
    // A prefix with glob metacharacters must still only match itself in SCAN.
    let s1 = Store::open(RedisConfig::single(&url).prefix(format!("{p}one*"))).unwrap();
    let s2 = Store::open(RedisConfig::single(&url).prefix(format!("{p}one?two"))).unwrap();
    let k = "k".to_string();
    s1.write_batch(&[put(&k, &"from-1".to_string())]).unwrap();
    s2.write_batch(&[put(&k, &"from-2".to_string())]).unwrap();
    assert_eq!(s1.load(&k).unwrap().unwrap().value, "from-1");
    assert_eq!(s2.load(&k).unwrap().unwrap().value, "from-2");
    assert_eq!(scan_all(&s1).len(), 1);
    assert_eq!(scan_all(&s2).len(), 1);
    s1.write_batch(&[WriteOp::Delete { key: &k }]).unwrap();
    assert_eq!(s2.load(&k).unwrap().unwrap().value, "from-2");
}

#[test]
fn auth_via_url() {
    let Some(url) = single_url() else { return };
    let _g = SINGLE.read().unwrap();
    let mut admin = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("cwtest")
        .arg("on")
        .arg(">s3cret")
        .arg("~cwtest:*")
        .arg("+@all")
        .query(&mut admin)
        .unwrap();
    let authed = url.replacen("redis://", "redis://cwtest:s3cret@", 1);
    let s = Store::open(RedisConfig::single(&authed).prefix(prefix("auth"))).unwrap();
    let k = "k".to_string();
    s.write_batch(&[put(&k, &"v".to_string())]).unwrap();
    assert_eq!(s.load(&k).unwrap().unwrap().value, "v");

    let wrong = url.replacen("redis://", "redis://cwtest:wrong@", 1);
    let e = Store::open(RedisConfig::single(&wrong)).unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Fail);
    assert!(
        !e.to_string().contains("wrong"),
        "password leaked into the error: {e}"
    );
}

#[test]
fn unreachable_server_is_fail() {
    // Port 1 on loopback: nothing listens there.
    let e = Store::open(RedisConfig::single("redis://127.0.0.1:1")).unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Fail);
    assert!(e.message().contains("cannot connect"), "{e}");
}

#[test]
fn cluster_contract() {
    let Some(urls) = cluster_urls() else { return };
    let _shared = CLUSTER.read().unwrap_or_else(|e| e.into_inner());
    let s = Store::open(RedisConfig::cluster(urls.clone()).prefix(prefix("cluster"))).unwrap();
    let mut con = redis::cluster::ClusterClient::new(urls.clone())
        .unwrap()
        .get_connection()
        .unwrap();
    contract(&s, &mut |k| {
        redis::cmd("PTTL").arg(k).query(&mut con).unwrap()
    });

    // The 300 scanned keys really are spread over the three primaries.
    let mut per_node = Vec::new();
    for u in &urls {
        let mut c = redis::Client::open(u.as_str())
            .unwrap()
            .get_connection()
            .unwrap();
        let n: usize = redis::cmd("DBSIZE").query(&mut c).unwrap();
        per_node.push(n);
    }
    assert!(
        per_node.iter().all(|n| *n > 0),
        "keys per node: {per_node:?}"
    );
}

#[test]
fn cluster_batches_keep_per_key_order_across_slots() {
    let Some(urls) = cluster_urls() else { return };
    let _shared = CLUSTER.read().unwrap_or_else(|e| e.into_inner());
    let s = Store::open(RedisConfig::cluster(urls).prefix(prefix("order"))).unwrap();
    let keys: Vec<String> = (0..64).map(|i| format!("key-{i}")).collect();
    let vals: Vec<String> = (0..4).map(|v| format!("v{v}")).collect();
    // put v0, put v1, delete, put v3 for every key, interleaved across keys.
    let mut ops = Vec::new();
    for (round, val) in vals.iter().enumerate() {
        for k in &keys {
            ops.push(if round == 2 {
                WriteOp::Delete { key: k }
            } else {
                put(k, val)
            });
        }
    }
    s.write_batch(&ops).unwrap();
    for k in &keys {
        assert_eq!(s.load(k).unwrap().unwrap().value, "v3", "{k}");
    }
    // Ending on a delete removes every key.
    let dels: Vec<_> = keys.iter().map(|k| WriteOp::Delete { key: k }).collect();
    s.write_batch(&dels).unwrap();
    assert!(scan_all(&s).is_empty());
}

/// Each primary's connection, id and port, for the resharding tests.
fn cluster_nodes(urls: &[String]) -> Vec<(redis::Connection, String, u16)> {
    urls.iter()
        .map(|u| {
            let mut c = raw(u);
            let id: String = redis::cmd("CLUSTER").arg("MYID").query(&mut c).unwrap();
            let port = u.rsplit(':').next().unwrap().parse().unwrap();
            (c, id, port)
        })
        .collect()
}

/// The slot of the (raw) key `key`, and which of `nodes` holds its keys.
fn slot_and_owner(nodes: &mut Nodes, key: &[u8]) -> (u16, usize) {
    let slot: u16 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query(&mut nodes[0].0)
        .unwrap();
    let owner = (0..nodes.len())
        .find(|&i| {
            let n: usize = redis::cmd("CLUSTER")
                .arg("COUNTKEYSINSLOT")
                .arg(slot)
                .query(&mut nodes[i].0)
                .unwrap();
            n > 0
        })
        .expect("some primary holds the slot's keys");
    (slot, owner)
}

type Nodes = [(redis::Connection, String, u16)];

/// `CLUSTER SETSLOT slot how id` on node `on`.
fn setslot(nodes: &mut Nodes, on: usize, slot: u16, how: &str, id: &str) {
    let _: () = redis::cmd("CLUSTER")
        .arg("SETSLOT")
        .arg(slot)
        .arg(how)
        .arg(id)
        .query(&mut nodes[on].0)
        .unwrap();
}

/// Mark `slot` as migrating from the node `from` to the node `to` (no key moved yet).
fn start_migration(nodes: &mut Nodes, slot: u16, from: usize, to: usize) {
    let (from_id, to_id) = (nodes[from].1.clone(), nodes[to].1.clone());
    setslot(nodes, to, slot, "IMPORTING", &from_id);
    setslot(nodes, from, slot, "MIGRATING", &to_id);
}

/// Move the (raw) `keys` of a migrating slot from the node `from` to the node `to`.
fn migrate(nodes: &mut Nodes, from: usize, to: usize, keys: &[Vec<u8>]) {
    let to_port = nodes[to].2;
    let _: () = redis::cmd("MIGRATE")
        .arg("127.0.0.1")
        .arg(to_port)
        .arg("")
        .arg(0)
        .arg(5000)
        .arg("KEYS")
        .arg(keys)
        .query(&mut nodes[from].0)
        .unwrap();
}

/// Move a migrating slot's remaining keys, then give the slot to `to` on every node.
fn finish_migration(nodes: &mut Nodes, slot: u16, from: usize, to: usize) {
    loop {
        let keys: Vec<Vec<u8>> = redis::cmd("CLUSTER")
            .arg("GETKEYSINSLOT")
            .arg(slot)
            .arg(100)
            .query(&mut nodes[from].0)
            .unwrap();
        if keys.is_empty() {
            break;
        }
        migrate(nodes, from, to, &keys);
    }
    let to_id = nodes[to].1.clone();
    for on in 0..nodes.len() {
        setslot(nodes, on, slot, "NODE", &to_id);
    }
}

/// Move `slot` (with its keys) from the node `from` to the node `to`, the way
/// `redis-cli --cluster reshard` does.
fn move_slot(nodes: &mut Nodes, slot: u16, from: usize, to: usize) {
    start_migration(nodes, slot, from, to);
    finish_migration(nodes, slot, from, to);
}

#[test]
fn cluster_batches_follow_a_resharding() {
    let Some(urls) = cluster_urls() else { return };
    let _alone = CLUSTER.write().unwrap_or_else(|e| e.into_inner());
    let s = Store::open(RedisConfig::cluster(urls.clone()).prefix(prefix("reshard"))).unwrap();
    let (k, v1, v2) = ("moving".to_string(), "v1".to_string(), "v2".to_string());
    // The store's pooled connection learns the slot map now.
    s.write_batch(&[put(&k, &v1)]).unwrap();
    let raw = t_key(&s, &k);
    let mut nodes = cluster_nodes(&urls);
    let (slot, owner) = slot_and_owner(&mut nodes, &raw);
    let target = (owner + 1) % nodes.len();
    move_slot(&mut nodes, slot, owner, target);
    // The pooled connection's map is stale: a batch may fail once (MOVED, not applied or
    // unknown), and must then succeed on a connection that reads the new map.
    let first = s.write_batch(&[put(&k, &v2)]);
    if let Err(e) = &first {
        assert_eq!(e.kind(), StoreErrorKind::Unknown, "{e}");
        s.write_batch(&[put(&k, &v2)]).unwrap();
    }
    assert_eq!(s.load(&k).unwrap().unwrap().value, "v2");
    move_slot(&mut nodes, slot, target, owner);
    // Moved back: the next batch may meet a stale map once more.
    let del = [WriteOp::Delete { key: &k }];
    if s.write_batch(&del).is_err() {
        s.write_batch(&del).unwrap();
    }
    assert!(s.load(&k).unwrap().is_none());
}

/// A batch that meets a slot in migration (an `ASK` redirect) fails; it never writes a second
/// copy of a key on the migration's target. redis-rs follows a redirect by sending the whole
/// node part again with one `ASKING` in front, which exempts only the part's first command:
/// here that is a key still on the source, which would land on the target as a stale copy.
#[test]
fn cluster_batches_do_not_follow_an_ask_redirect() {
    let Some(urls) = cluster_urls() else { return };
    let _alone = CLUSTER.write().unwrap_or_else(|e| e.into_inner());
    // One hash tag: every key of the store in one slot.
    let s =
        Store::open(RedisConfig::cluster(urls.clone()).prefix(format!("{{{}}}", prefix("ask"))))
            .unwrap();
    let (k1, k2) = ("stays".to_string(), "moves".to_string());
    let (old, new) = ("old".to_string(), "new".to_string());
    s.write_batch(&[put(&k1, &old), put(&k2, &old)]).unwrap();
    let (raw1, raw2) = (t_key(&s, &k1), t_key(&s, &k2));
    let mut nodes = cluster_nodes(&urls);
    let (slot, owner) = slot_and_owner(&mut nodes, &raw1);
    let target = (owner + 1) % nodes.len();
    // Half a migration: k2 has moved, k1 has not.
    start_migration(&mut nodes, slot, owner, target);
    migrate(&mut nodes, owner, target, &[raw2]);

    let e = s
        .write_batch(&[put(&k1, &new), put(&k2, &new)])
        .expect_err("a batch across a migration's two sides cannot complete");
    assert_eq!(e.kind(), StoreErrorKind::Unknown, "{e}");
    let on_target: (i64,) = redis::pipe()
        .cmd("ASKING")
        .ignore()
        .cmd("EXISTS")
        .arg(&raw1)
        .query(&mut nodes[target].0)
        .unwrap();
    assert_eq!(on_target, (0,), "no copy of the unmoved key on the target");

    // Finish the migration, then put everything back.
    finish_migration(&mut nodes, slot, owner, target);
    move_slot(&mut nodes, slot, target, owner);
    let dels = [WriteOp::Delete { key: &k1 }, WriteOp::Delete { key: &k2 }];
    if s.write_batch(&dels).is_err() {
        s.write_batch(&dels).unwrap();
    }
    assert!(s.load(&k1).unwrap().is_none() && s.load(&k2).unwrap().is_none());
}

#[test]
fn reconnects_after_server_restart() {
    let Some(url) = single_url() else { return };
    let (Ok(port), Ok(restart)) = (
        std::env::var("COGWHEEL_REDIS_PORT"),
        std::env::var("COGWHEEL_REDIS_RESTART_CMD"),
    ) else {
        println!("skipped: COGWHEEL_REDIS_PORT / COGWHEEL_REDIS_RESTART_CMD not set");
        return;
    };
    let _g = SINGLE.write().unwrap();
    let mut cfg = RedisConfig::single(&url).prefix(prefix("restart"));
    cfg.max_idle = 1;
    let s = Store::open(cfg).unwrap();
    let keys: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();

    // A stream of writes; the server dies after the 10th and comes back after the 15th.
    let mut outcomes = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        if i == 10 {
            // (redis-cli may report the connection a successful SHUTDOWN drops as an error, so
            // its status says nothing; the port closing does.)
            let _ = std::process::Command::new("redis-cli")
                .args(["-h", "127.0.0.1", "-p", &port, "shutdown", "nosave"])
                .status()
                .unwrap();
            eventually("the server to stop", || {
                std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap()))
                    .is_err()
                    .then_some(())
            });
        }
        if i == 15 {
            assert!(
                std::process::Command::new("sh")
                    .arg("-c")
                    .arg(&restart)
                    .status()
                    .unwrap()
                    .success()
            );
        }
        let r = s.write_batch(&[put(k, k)]);
        if i >= 15 && r.is_err() {
            // Back, but maybe not serving yet: the store must reconnect by itself.
            eventually("the store to reconnect", || {
                s.write_batch(&[put(k, k)]).ok()
            });
            outcomes.push(Ok(()));
            continue;
        }
        outcomes.push(r.map_err(|e| (e.kind(), e.to_string())));
    }

    println!("writes while the server was down: {:?}", &outcomes[10..15]);
    assert!(outcomes[..10].iter().all(Result::is_ok), "{outcomes:?}");
    // Down: the call on the connection that died mid-flight is Unknown or Fail (the request may
    // have been written to a socket whose peer was gone); once that connection is dropped, the
    // store cannot connect, which is Fail.
    for (i, o) in outcomes[10..15].iter().enumerate() {
        match o {
            Err((StoreErrorKind::Unknown, _)) if i == 0 => {}
            Err((StoreErrorKind::Fail, _)) => {}
            other => panic!("write {} while down: {other:?}", 10 + i),
        }
    }
    assert!(
        outcomes[11..15]
            .iter()
            .all(|o| matches!(o, Err((StoreErrorKind::Fail, m)) if m.contains("cannot connect"))),
        "{outcomes:?}"
    );
    assert!(outcomes[15..].iter().all(Result::is_ok), "{outcomes:?}");
    // The server restarted without its data (nosave): writes before the crash are gone, writes
    // after the restart are there.
    assert_eq!(s.load(&keys[5]).unwrap(), None);
    for k in &keys[15..] {
        assert_eq!(s.load(k).unwrap().unwrap().value, *k);
    }
}

#[test]
fn response_timeout_is_unknown_and_the_store_recovers() {
    let Some(url) = single_url() else { return };
    let Ok(dir) = std::env::var("COGWHEEL_REDIS_DIR") else {
        println!("skipped: COGWHEEL_REDIS_DIR not set (the test stops the server's process)");
        return;
    };

    /// The server's process stopped (SIGSTOP) until this is dropped (SIGCONT): it answers
    /// nothing, for as long as the test needs, and a failing assertion never leaves it stopped
    /// for the other tests. (Not `CLIENT PAUSE`: its default mode, ALL, also holds back the
    /// `CLIENT UNPAUSE` that would end it early, so the pause would have to be timed to fit
    /// the test's timeouts.)
    struct Stopped(String);
    impl Stopped {
        fn new(pid: String) -> Self {
            let status = std::process::Command::new("kill")
                .args(["-STOP", &pid])
                .status()
                .unwrap();
            assert!(status.success(), "kill -STOP {pid}: {status}");
            Stopped(pid)
        }
    }
    impl Drop for Stopped {
        fn drop(&mut self) {
            // No panic here (it may run while unwinding): report and go on.
            match std::process::Command::new("kill")
                .args(["-CONT", &self.0])
                .status()
            {
                Ok(s) if s.success() => {}
                other => eprintln!("kill -CONT {}: {other:?}", self.0),
            }
        }
    }

    let _g = SINGLE.write().unwrap();
    let s = Store::open(
        RedisConfig::single(&url)
            .prefix(prefix("timeout"))
            .response_timeout(Duration::from_millis(200)),
    )
    .unwrap();
    let k = "k".to_string();
    s.write_batch(&[put(&k, &"before".to_string())]).unwrap();

    // The server stops answering: a written batch times out.
    let pid = std::fs::read_to_string(format!("{dir}/redis.pid")).expect("pid file");
    let stopped = Stopped::new(pid.trim().to_string());
    let e = s
        .write_batch(&[put(&k, &"during".to_string())])
        .unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Unknown, "{e}");
    // Reads time out too, as Fail (a read applies nothing).
    assert_eq!(s.load(&k).unwrap_err().kind(), StoreErrorKind::Fail);
    drop(stopped);

    // The timed-out connection was dropped; the next call uses a fresh one. Either value is
    // allowed after an Unknown (the resumed server may still run the write it had received
    // on the connection the client gave up on).
    let now = s.load(&k).unwrap().unwrap().value;
    assert!(now == "before" || now == "during", "{now}");
    s.write_batch(&[put(&k, &"after".to_string())]).unwrap();
    assert_eq!(s.load(&k).unwrap().unwrap().value, "after");
}

#[test]
fn tls_and_password_via_url() {
    let Some(url) = std::env::var("COGWHEEL_REDIS_TLS_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        println!("skipped: COGWHEEL_REDIS_TLS_URL not set (run through .ci/redis.sh with openssl)");
        return;
    };
    let opened = Store::open(RedisConfig::single(&url).prefix(prefix("tls")));
    if !cfg!(feature = "redis-tls") {
        let e = opened.unwrap_err();
        assert!(e.message().contains("redis-tls"), "{e}");
        println!("skipped: TLS round trip needs --features redis-tls");
        return;
    }
    let s = opened.unwrap();
    let k = "k".to_string();
    s.write_batch(&[put(&k, &"over tls".to_string())]).unwrap();
    assert_eq!(s.load(&k).unwrap().unwrap().value, "over tls");
    assert_eq!(scan_all(&s).len(), 1);

    // The wrong password is refused, and the password is not in the message.
    let wrong = url.replacen(":cw-tls-pass@", ":nope@", 1);
    let e = Store::open(RedisConfig::single(&wrong)).unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Fail);
    assert!(!e.to_string().contains("nope"), "{e}");
}

/// A stand-in server: answers `+OK` to every command (`+PONG` to `PING`, and to `CLUSTER SLOTS`
/// a map of one range 0-16383 owned by itself, so it also passes for a one-node cluster) until
/// told to go silent, then reads, counts and drops what it gets; reports each connection's end
/// (also one cut mid-command) on `closed`.
struct SilentServer {
    addr: std::net::SocketAddr,
    silent: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Commands received while silent.
    heard: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Answer `SET` with an error reply (as a server out of memory does).
    reject: std::sync::Arc<std::sync::atomic::AtomicBool>,
    closed: std::sync::mpsc::Receiver<()>,
}

impl SilentServer {
    fn start() -> SilentServer {
        use std::io::{BufRead, BufReader, Read, Write};
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let silent = std::sync::Arc::new(AtomicBool::new(false));
        let (tx, closed) = std::sync::mpsc::channel();
        let flag = silent.clone();
        let reject = std::sync::Arc::new(AtomicBool::new(false));
        let rejecting = reject.clone();
        let heard = std::sync::Arc::new(AtomicUsize::new(0));
        let hearing = heard.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let (flag, tx, rejecting, hearing) =
                    (flag.clone(), tx.clone(), rejecting.clone(), hearing.clone());
                std::thread::spawn(move || {
                    let mut out = conn.try_clone().unwrap();
                    let mut r = BufReader::new(conn);
                    // One command: `*n` then n bulk strings (`$len`, the bytes, CRLF); `None`
                    // at the connection's end, also in the middle of a command.
                    let read_command = |r: &mut BufReader<_>| -> Option<Vec<String>> {
                        let mut line = String::new();
                        let mut next_number = |r: &mut BufReader<_>, mark: char| {
                            line.clear();
                            match r.read_line(&mut line) {
                                Ok(n) if n > 0 => line.trim().strip_prefix(mark)?.parse().ok(),
                                _ => None,
                            }
                        };
                        let n: usize = next_number(r, '*')?;
                        let mut args = Vec::with_capacity(n);
                        for _ in 0..n {
                            let len: usize = next_number(r, '$')?;
                            let mut body = vec![0; len + 2];
                            r.read_exact(&mut body).ok()?;
                            body.truncate(len);
                            args.push(String::from_utf8_lossy(&body).to_ascii_uppercase());
                        }
                        Some(args)
                    };
                    let slots = format!(
                        "*1\r\n*3\r\n:0\r\n:16383\r\n*2\r\n$9\r\n127.0.0.1\r\n:{}\r\n",
                        addr.port()
                    );
                    while let Some(args) = read_command(&mut r) {
                        if flag.load(Ordering::SeqCst) {
                            hearing.fetch_add(1, Ordering::SeqCst);
                            continue;
                        }
                        let args: Vec<&str> = args.iter().map(String::as_str).collect();
                        let reply = match args[..] {
                            ["PING", ..] => "+PONG\r\n",
                            ["CLUSTER", "SLOTS"] => slots.as_str(),
                            ["SET", ..] if rejecting.load(Ordering::SeqCst) => {
                                "-OOM command not allowed when used memory > 'maxmemory'.\r\n"
                            }
                            _ => "+OK\r\n",
                        };
                        if out.write_all(reply.as_bytes()).is_err() {
                            break;
                        }
                    }
                    let _ = tx.send(());
                });
            }
        });
        SilentServer {
            addr,
            silent,
            heard,
            reject,
            closed,
        }
    }
}

/// A write-behind batch of 20,000 puts to a server that stopped answering: reading every reply
/// would wait 20,000 timeouts (5.5 hours); the batch must give up after the first, and the
/// timed-out connection must be closed (the store is still open), not kept out of step with
/// its replies.
fn a_silent_server_costs_a_batch_one_timeout(server: &SilentServer, config: RedisConfig) {
    use std::sync::atomic::Ordering;
    let s =
        std::sync::Arc::new(Store::open(config.response_timeout(Duration::from_secs(1))).unwrap());
    let keys: Vec<String> = (0..20_000).map(|i| format!("k{i}")).collect();
    let few = keys[..100].to_vec();
    let small: Vec<_> = few.iter().map(|k| put(k, k)).collect();
    s.write_batch(&small).unwrap();

    server.silent.store(true, Ordering::SeqCst);
    let store = s.clone();
    let e = support::within_a_minute(move || {
        let ops: Vec<_> = keys.iter().map(|k| put(k, k)).collect();
        store.write_batch(&ops)
    })
    .unwrap_err();
    assert_eq!(e.kind(), StoreErrorKind::Unknown, "{e}");
    server
        .closed
        .recv_timeout(Duration::from_secs(60))
        .expect("the timed-out connection was closed");
    // Sent once: not again on the same connection, out of step with its replies.
    assert_eq!(server.heard.load(Ordering::SeqCst), 20_000);
    // The next batch gets a new connection.
    server.silent.store(false, Ordering::SeqCst);
    s.write_batch(&small).unwrap();
}

#[test]
fn a_silent_server_costs_a_batch_one_timeout_not_one_per_command() {
    let server = SilentServer::start();
    let url = format!("redis://{}", server.addr);
    a_silent_server_costs_a_batch_one_timeout(&server, RedisConfig::single(url));
}

#[test]
fn a_silent_cluster_node_costs_a_batch_one_timeout_not_one_per_command() {
    let server = SilentServer::start();
    let url = format!("redis://{}", server.addr);
    a_silent_server_costs_a_batch_one_timeout(&server, RedisConfig::cluster([url]));
}

/// A write the server refuses with an error reply (here: out of memory) fails the batch, on a
/// single node and in a cluster, whatever the batch's other replies were: the write-behind
/// writer must keep it and retry, never count it as stored. (The store's cluster batches are
/// its own per-node pipelines; redis-rs turns their error replies into errors.)
#[test]
fn an_error_reply_fails_the_batch() {
    use std::sync::atomic::Ordering;
    let server = SilentServer::start();
    let url = format!("redis://{}", server.addr);
    let stores = [
        Store::open(RedisConfig::single(url.clone())).unwrap(),
        Store::open(RedisConfig::cluster([url])).unwrap(),
    ];
    let keys: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
    for (mode, s) in ["single", "cluster"].iter().zip(&stores) {
        let mut ops: Vec<_> = keys.iter().map(|k| put(k, k)).collect();
        s.write_batch(&ops).unwrap();
        // One put in the middle of deletes: the server answers it (only) with an error.
        server.reject.store(true, Ordering::SeqCst);
        ops = keys.iter().map(|k| WriteOp::Delete { key: k }).collect();
        ops[5] = put(&keys[5], &keys[5]);
        let e = s.write_batch(&ops).unwrap_err();
        server.reject.store(false, Ordering::SeqCst);
        assert!(e.to_string().contains("OOM"), "{mode}: {e}");
        s.write_batch(&ops).unwrap();
    }
}
