//! The hit_ratio example on a small generated trace (cargo test builds examples first).

use std::path::PathBuf;
use std::process::Command;

fn example() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap(); // target/<profile>/
    let path = dir
        .join("examples")
        .join(format!("hit_ratio{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        // Running this test alone (`--test hit_ratio_tool`) does not build examples.
        let status = Command::new(env!("CARGO"))
            .args(["build", "--example", "hit_ratio"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .unwrap();
        assert!(status.success());
    }
    path
}

#[test]
fn replays_a_generated_trace() {
    let dir = tempfile::tempdir().unwrap();
    // A loop over 4 keys, repeated: with capacity 4 everything after the first pass hits;
    // with capacity 2 a loop larger than the cache defeats recency.
    let trace = dir.path().join("loop4.trace");
    let mut text = String::new();
    for _ in 0..25 {
        for k in 1..=4 {
            text.push_str(&format!("{k}\n"));
        }
        text.push_str("*\n");
    }
    std::fs::write(&trace, text).unwrap();
    let out = Command::new(example())
        .args(["--format", "lirs", "--shards", "1", "--capacity", "4,100"])
        .arg(&trace)
        .output()
        .expect("the example is built by cargo test");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "trace\tcapacity\trequests\thits\thit_percent");
    assert_eq!(
        lines[1], "loop4\t4\t100\t96\t96.0000",
        "4 cold misses, then all hits"
    );
    assert_eq!(lines[2], "loop4\t100\t100\t96\t96.0000");
    // The binary format and the same-key convention.
    let bin = dir.path().join("rep.trace");
    let keys: [i32; 6] = [7, 7, 7, -1, -1, 7];
    std::fs::write(
        &bin,
        keys.iter()
            .flat_map(|k| k.to_be_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let out = Command::new(example())
        .args([
            "--format",
            "cache2k",
            "--same-key-is-hit",
            "--capacity",
            "10",
        ])
        .arg(&bin)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().nth(1), Some("rep\t10\t6\t4\t66.6667"));
    // Bad input is a clear error, not a panic.
    let out = Command::new(example())
        .args(["--format", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--format"));
    // The ARC format (`start count ...`: the blocks start..start+count), zstd-compressed,
    // under both policies: keys 1 2 3 1 2 3 10 hit 3 times.
    let zst = dir.path().join("blocks.lis.zst");
    let lis = "1 3 0 0\n1 3 0 0\n10 1 0 0\n";
    let level = ruzstd::encoding::CompressionLevel::Fastest;
    std::fs::write(
        &zst,
        ruzstd::encoding::compress_to_vec(lis.as_bytes(), level),
    )
    .unwrap();
    for policy in ["clockpro", "clock"] {
        let out = Command::new(example())
            .args(["--format", "arc", "--policy", policy, "--capacity", "10"])
            .arg(&zst)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert_eq!(
            text.lines().nth(1),
            Some("blocks\t10\t7\t3\t42.8571"),
            "{policy}"
        );
    }
    // The same trace as two zstd frames (as `zstd -T0` or `cat a.zst b.zst` write it): both
    // are read.
    let frames = dir.path().join("frames.lis.zst");
    let (first, second) = lis.split_at(lis.find('\n').unwrap() + 1);
    let mut bytes = ruzstd::encoding::compress_to_vec(first.as_bytes(), level);
    bytes.extend(ruzstd::encoding::compress_to_vec(
        second.as_bytes(),
        ruzstd::encoding::CompressionLevel::Fastest,
    ));
    std::fs::write(&frames, bytes).unwrap();
    let out = Command::new(example())
        .args(["--format", "arc", "--capacity", "10"])
        .arg(&frames)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().nth(1), Some("frames\t10\t7\t3\t42.8571"));
    // Plain CLOCK has no cold share to set.
    let out = Command::new(example())
        .args(["--format", "arc", "--policy", "clock", "--cold", "fixed5"])
        .args(["--capacity", "10"])
        .arg(&zst)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--policy clock with --cold fixed5"));
}

/// `--cold fixedN` and `--cold hothits`: a zigzag (sweeps up and down over 200 keys) defeats
/// adaptive CLOCK-Pro at capacity 50, while a 99 % cold share behaves like LRU and hits on
/// every turn, and the hot-hits rule, which does not shrink the cold share for unused test
/// periods, learns to.
#[test]
fn fixed_cold_share_is_selectable() {
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("zz.trace");
    let mut text = String::new();
    for sweep in 0..20 {
        for i in 0..200u32 {
            let k = if sweep % 2 == 0 { i } else { 199 - i };
            text.push_str(&format!("{k}\n"));
        }
    }
    std::fs::write(&trace, text).unwrap();
    let hits = |cold: &str| -> Result<u64, String> {
        let out = Command::new(example())
            .args(["--format", "lirs", "--shards", "1", "--capacity", "50"])
            .args(["--cold", cold])
            .arg(&trace)
            .output()
            .unwrap();
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        let text = String::from_utf8(out.stdout).unwrap();
        let line = text.lines().nth(1).expect("one result line");
        Ok(line.split('\t').nth(3).unwrap().parse().unwrap())
    };
    let adaptive = hits("adaptive").unwrap();
    let lru_like = hits("fixed99").unwrap();
    // LRU hits the 50 most recent keys at each of the 19 turns: 950.
    assert!(lru_like >= 900, "fixed99: {lru_like} hits");
    assert!(
        lru_like > 20 * adaptive,
        "fixed99 {lru_like} against adaptive {adaptive}"
    );
    // The hot-hits rule grows the cold share on every turn's re-references and never gives
    // it back (no hot page is ever referenced): most turns hit like LRU (701 of 950 here).
    let hot_hits = hits("hothits").unwrap();
    assert!(
        hot_hits >= 600 && hot_hits > 15 * adaptive,
        "hothits {hot_hits} against adaptive {adaptive}"
    );
    for bad in ["fixed", "fixedx", "fixed101"] {
        let err = hits(bad).expect_err(bad);
        assert!(err.contains("fixedN"), "{bad}: {err}");
    }
}

/// A one-shard cache, driven through the public API by the tool, reproduces the authors'
/// simulator exactly (the policy-level test checks the policy alone; this one checks that
/// the cache around it adds nothing: no extra eviction, no lost reference bit). Every lirs
/// trace under 60 000 requests, every capacity and both variants of the reference table.
#[test]
fn a_one_shard_cache_reproduces_the_reference_simulator() {
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/traces"));
    let Ok(table) = std::fs::read_to_string(dir.join("clockpro_reference_misses.tsv")) else {
        println!("skipped: no reference table under {}", dir.display());
        return;
    };
    let small = [
        "gli", "cs", "backf", "cpp", "ps", "multi1", "multi2", "multi3", "scan", "zigzag",
    ];
    let mut checked = 0;
    for trace in small {
        for (variant, cold) in [
            ("clockpro_adapt", "adaptive"),
            ("clockpro_fixed5", "fixed5"),
        ] {
            let rows: Vec<(u64, u64, u64)> = table
                .lines()
                .map(|l| l.split('\t').collect::<Vec<_>>())
                .filter(|f| f.len() >= 5 && f[0] == trace && f[1] == variant)
                .map(|f| {
                    (
                        f[2].parse().unwrap(),
                        f[3].parse().unwrap(),
                        f[4].parse().unwrap(),
                    )
                })
                .collect();
            assert!(!rows.is_empty(), "{trace} {variant}: no reference rows");
            let caps: Vec<String> = rows.iter().map(|r| r.0.to_string()).collect();
            let out = Command::new(example())
                .args(["--format", "lirs", "--shards", "1", "--same-key-is-hit"])
                .args(["--cold", cold, "--capacity", &caps.join(",")])
                .arg(dir.join("lirs").join(format!("{trace}.trace")))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8(out.stdout).unwrap();
            for (line, &(capacity, requests, misses)) in text.lines().skip(1).zip(&rows) {
                let f: Vec<&str> = line.split('\t').collect();
                let (cap, reqs, hits): (u64, u64, u64) = (
                    f[1].parse().unwrap(),
                    f[2].parse().unwrap(),
                    f[3].parse().unwrap(),
                );
                assert_eq!((cap, reqs), (capacity, requests), "{trace} {variant}");
                assert_eq!(reqs - hits, misses, "{trace} {variant} capacity {capacity}");
                checked += 1;
            }
        }
    }
    assert_eq!(
        checked, 92,
        "every reference row of these traces was checked"
    );
}

#[test]
fn malformed_input_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str], name: &str, content: &[u8]| {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let out = Command::new(example())
            .args(args)
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // An ARC run past the key space.
    let (code, err) = run(
        &["--format", "arc", "--capacity", "10"],
        "big.arc",
        b"18446744073709551615 2 0 0\n",
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("out of range"), "{err}");
    // A cache2k file cut mid-key.
    let (code, err) = run(
        &["--format", "cache2k", "--capacity", "10"],
        "cut.trace",
        b"abcde",
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("4-byte"), "{err}");
    // Settings the cache refuses.
    let (code, err) = run(
        &["--format", "lirs", "--shards", "3", "--capacity", "10"],
        "ok.trace",
        b"1\n",
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("power of two"), "{err}");
}
