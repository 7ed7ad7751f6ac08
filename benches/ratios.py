#!/usr/bin/env python3
"""Ratio tables from one `cargo bench --bench throughput` run.

Reads criterion's estimates (target/criterion/<group>/<contestant>/<N>t/new/estimates.json),
turns the median time per iteration into ops/s (an iteration is BATCH ops, all threads
together) and prints cogwheel's throughput as a ratio of each peer's, per workload and thread
count, as Markdown. Only compare numbers from the same run.

Usage: python3 benches/ratios.py [target/criterion]
"""

import json
import os
import sys

BATCH = 1 << 14  # keep in step with benches/throughput.rs
GROUPS = [
    ("read_hits", "read-only hits, Zipf 1.0, 1M keys resident"),
    ("mixed_95get_5insert", "95 % get / 5 % insert, Zipf 0.99, 1M keys, cap 100k"),
    ("mixed_50get_50insert", "50 % get / 50 % insert, Zipf 0.99, 1M keys, cap 100k"),
    ("churn_uniform", "uniform churn, 10M keys, cap 1M"),
]
PEERS = ["quick_cache", "moka", "hashmap"]


def ops_per_sec(root, group, who, threads):
    path = os.path.join(root, group, who, f"{threads}t", "new", "estimates.json")
    try:
        with open(path) as f:
            est = json.load(f)
    except FileNotFoundError:
        return None
    ns = est["median"]["point_estimate"]
    return BATCH / (ns * 1e-9)


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "target/criterion"
    print("| workload | threads | cogwheel Mops/s | quick_cache | moka | HashMap "
          "| cog/quick_cache | cog/moka | cog/HashMap |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for group, label in GROUPS:
        for t in (1, 2):
            cog = ops_per_sec(root, group, "cogwheel", t)
            if cog is None:
                continue
            peers = {p: ops_per_sec(root, group, p, t) for p in PEERS}
            fmt = lambda v: "–" if v is None else f"{v / 1e6:.2f}"
            ratio = lambda v: "–" if v is None else f"{cog / v:.2f}×"
            print(f"| {label} | {t} | {cog / 1e6:.2f} | {fmt(peers['quick_cache'])} "
                  f"| {fmt(peers['moka'])} | {fmt(peers['hashmap'])} "
                  f"| {ratio(peers['quick_cache'])} | {ratio(peers['moka'])} "
                  f"| {ratio(peers['hashmap'])} |")
    # The batch read API, where the read-only group measured it (same run, same streams).
    for t in (1, 2):
        many = ops_per_sec(root, "read_hits", "cogwheel_get_many", t)
        if many is None:
            continue
        peers = {p: ops_per_sec(root, "read_hits", p, t) for p in PEERS}
        ratio = lambda v: "–" if v is None else f"{many / v:.2f}×"
        print(f"| read-only hits, `get_many` ({64} keys per call) | {t} | {many / 1e6:.2f} "
              f"| | | | {ratio(peers['quick_cache'])} | {ratio(peers['moka'])} "
              f"| {ratio(peers['hashmap'])} |")


if __name__ == "__main__":
    main()
