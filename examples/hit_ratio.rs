//! Replay cache traces and print hit ratios, one TSV line per trace and capacity.
//!
//! ```text
//! cargo run --release --example hit_ratio -- --format lirs|arc|cache2k [--shards N]
//!     [--policy clockpro|clockpro-long|clock] [--cold adaptive|hothits|fixedN] [--same-key-is-hit]
//!     --capacity 100,250,500 PATH...
//! ```
//!
//! Each request is a `get`, then an `insert` on a miss (a cold start). Formats: `lirs` (one
//! decimal key per line; `*` lines are markers), `arc` (`start count _ _` lines expanding to
//! `start..start+count`; plain or `.zst`), `cache2k` (big-endian `i32` keys). With
//! `--same-key-is-hit`, a request for the same key as the one before is counted as a hit
//! without touching the cache (the CLOCK-Pro reference simulator's convention). `--cold
//! fixedN` fixes the share of resident cold pages at N % (`fixed5` is the authors' shipped
//! header) instead of adapting it; `--cold hothits` adapts it by weighing test-page
//! re-references against hot-page hits (`EvictionPolicy::ClockProHotHits`) instead of the
//! authors' rule. The hash seed is fixed, so runs are reproducible.

use cogwheel::{Cache, EvictionPolicy, fixed_hasher};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::ExitCode;

struct Args {
    format: String,
    shards: Option<usize>,
    policy: EvictionPolicy,
    same_key_is_hit: bool,
    capacities: Vec<u64>,
    paths: Vec<String>,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        format: String::new(),
        shards: None,
        policy: EvictionPolicy::ClockPro,
        same_key_is_hit: false,
        capacities: Vec::new(),
        paths: Vec::new(),
    };
    let mut policy = "clockpro".to_string();
    let mut cold = "adaptive".to_string();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--format" => a.format = value("--format")?,
            "--shards" => {
                a.shards = Some(
                    value("--shards")?
                        .parse()
                        .map_err(|e| format!("--shards: {e}"))?,
                )
            }
            "--policy" => policy = value("--policy")?,
            "--cold" => cold = value("--cold")?,
            "--same-key-is-hit" => a.same_key_is_hit = true,
            "--capacity" => {
                for c in value("--capacity")?.split(',') {
                    a.capacities.push(
                        c.trim()
                            .parse()
                            .map_err(|e| format!("--capacity {c}: {e}"))?,
                    );
                }
            }
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            path => a.paths.push(path.to_string()),
        }
    }
    a.policy = match (policy.as_str(), cold.as_str()) {
        ("clockpro", "adaptive") => EvictionPolicy::ClockPro,
        ("clockpro", "hothits") => EvictionPolicy::ClockProHotHits,
        ("clockpro", c) if c.starts_with("fixed") => {
            let percent = c["fixed".len()..]
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| format!("--cold {c}: want fixedN with N a percentage, 0 to 100"))?;
            EvictionPolicy::ClockProFixedCold { percent }
        }
        ("clockpro-long", "adaptive") => EvictionPolicy::ClockProLongHistory,
        // Plain CLOCK has no cold share: only the default `--cold` makes sense with it.
        ("clock", "adaptive") => EvictionPolicy::Clock,
        (p, c) => return Err(format!("unsupported --policy {p} with --cold {c}")),
    };
    if !["lirs", "arc", "cache2k"].contains(&a.format.as_str()) {
        return Err("--format must be lirs, arc or cache2k".into());
    }
    if a.capacities.is_empty() || a.paths.is_empty() {
        return Err("need --capacity and at least one PATH".into());
    }
    Ok(a)
}

/// Every zstd frame of a file, one after the other (`zstd -T0` and `cat a.zst b.zst` write
/// several; a decoder stops at the end of the first).
struct Frames<R: std::io::BufRead> {
    frame: Option<ruzstd::decoding::StreamingDecoder<R, ruzstd::decoding::FrameDecoder>>,
}

impl<R: std::io::BufRead> Frames<R> {
    fn new(input: R) -> Result<Self, String> {
        let frame = ruzstd::decoding::StreamingDecoder::new(input).map_err(|e| e.to_string())?;
        Ok(Frames { frame: Some(frame) })
    }
}

impl<R: std::io::BufRead> Read for Frames<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            let Some(frame) = &mut self.frame else {
                return Ok(0);
            };
            let n = frame.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            // This frame is done: another one follows unless the input is at its end.
            let mut input = self.frame.take().expect("checked above").into_inner();
            if input.fill_buf()?.is_empty() {
                return Ok(0);
            }
            let next = ruzstd::decoding::StreamingDecoder::new(input)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            self.frame = Some(next);
        }
    }
}

fn read_trace(format: &str, path: &Path) -> Result<Vec<u64>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let raw: Box<dyn Read> = if path.extension().is_some_and(|e| e == "zst") {
        Box::new(Frames::new(BufReader::new(file)).map_err(|e| format!("{}: {e}", path.display()))?)
    } else {
        Box::new(file)
    };
    let mut keys = Vec::new();
    match format {
        "cache2k" => {
            let mut bytes = Vec::new();
            BufReader::new(raw)
                .read_to_end(&mut bytes)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            if bytes.len() % 4 != 0 {
                return Err(format!(
                    "{}: {} bytes, not a whole number of 4-byte keys",
                    path.display(),
                    bytes.len()
                ));
            }
            for c in bytes.chunks_exact(4) {
                keys.push(i32::from_be_bytes([c[0], c[1], c[2], c[3]]) as u32 as u64);
            }
        }
        _ => {
            for (n, line) in BufReader::new(raw).lines().enumerate() {
                let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
                let line = line.trim();
                if line.is_empty() || line == "*" {
                    continue;
                }
                let mut fields = line.split_whitespace();
                let bad = |_| format!("{}:{}: not a key: {line}", path.display(), n + 1);
                let start: u64 = fields.next().unwrap_or_default().parse().map_err(bad)?;
                if format == "arc" {
                    let count: u64 = fields.next().unwrap_or("1").parse().map_err(bad)?;
                    // A run of `count` consecutive blocks; a count beyond any real trace's (or
                    // one that runs past the key space) is a malformed line.
                    let end = start
                        .checked_add(count)
                        .filter(|_| count <= MAX_RUN)
                        .ok_or_else(|| {
                            format!("{}:{}: run out of range: {line}", path.display(), n + 1)
                        })?;
                    keys.extend(start..end);
                } else {
                    keys.push(start);
                }
            }
        }
    }
    Ok(keys)
}

/// The longest run one ARC trace line may name (the shipped traces' longest is far shorter).
const MAX_RUN: u64 = 1 << 24;

fn replay(a: &Args, keys: &[u64], capacity: u64) -> Result<u64, String> {
    let mut b = Cache::<u64, ()>::builder()
        .max_capacity(capacity)
        .eviction_policy(a.policy);
    if let Some(n) = a.shards {
        b = b.shards(n);
    }
    let cache = b
        .hasher(fixed_hasher(0))
        .build()
        .map_err(|e| format!("capacity {capacity}: {e}"))?;
    let mut hits = 0;
    let mut prev = None;
    for &k in keys {
        if a.same_key_is_hit && prev == Some(k) {
            hits += 1;
            continue;
        }
        prev = Some(k);
        if cache.get(&k).is_some() {
            hits += 1;
        } else {
            let _ = cache.insert(k, ());
        }
    }
    Ok(hits)
}

fn main() -> ExitCode {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("hit_ratio: {e}");
            return ExitCode::from(2);
        }
    };
    println!("trace\tcapacity\trequests\thits\thit_percent");
    for p in &a.paths {
        let path = Path::new(p);
        let keys = match read_trace(&a.format, path) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("hit_ratio: {e}");
                return ExitCode::FAILURE;
            }
        };
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(p)
            .split('.')
            .next()
            .unwrap_or(p)
            .to_string();
        for &c in &a.capacities {
            let hits = match replay(&a, &keys, c) {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("hit_ratio: {e}");
                    return ExitCode::from(2);
                }
            };
            let pct = if keys.is_empty() {
                0.0
            } else {
                100.0 * hits as f64 / keys.len() as f64
            };
            println!("{name}\t{c}\t{}\t{hits}\t{pct:.4}", keys.len());
        }
    }
    ExitCode::SUCCESS
}
