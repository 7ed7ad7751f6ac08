"""Generate the six synthetic traces of PERFORMANCE.md ("Session 7: hot hits ...").

Usage: python3 benches/synthetic_traces.py OUT_DIR
Writes OUT_DIR/{zipf99,zipf70,zipfscan,shift,uniform,loopnoise}.trace in the `lirs` format
(one decimal key per line), 400 000 requests each, from a fixed seed. Replay them with
    target/release/examples/hit_ratio --format lirs [--cold hothits] --capacity 500,2000,8000 OUT_DIR/*.trace
"""
import bisect
import itertools
import os
import random
import sys

N = 400_000
random.seed(1)


def zipf(n, s):
    """A sampler of ranks 0..n with Zipf exponent s, over a shuffled key order."""
    cum = list(itertools.accumulate(1.0 / (i + 1) ** s for i in range(n)))
    keys = list(range(n))
    random.shuffle(keys)
    return lambda: keys[bisect.bisect_left(cum, random.random() * cum[-1])]


def write(out, name, seq):
    with open(os.path.join(out, name + ".trace"), "w") as f:
        f.write("\n".join(map(str, seq[:N])) + "\n")


def main(out):
    os.makedirs(out, exist_ok=True)
    z = zipf(100_000, 0.99)
    write(out, "zipf99", [z() for _ in range(N)])
    z = zipf(100_000, 0.7)
    write(out, "zipf70", [z() for _ in range(N)])
    # Zipf 0.9 over 50 000 keys, with a scan of 3 000 fresh keys every 20 000 requests.
    z, seq, fresh = zipf(50_000, 0.9), [], 10**7
    while len(seq) < N:
        seq += [z() for _ in range(20_000)]
        seq += range(fresh, fresh + 3_000)
        fresh += 3_000
    write(out, "zipfscan", seq)
    # A hot set that moves by 10 000 keys every 50 000 requests.
    z, seq = zipf(20_000, 0.9), []
    for phase in range(N // 50_000):
        seq += [z() + phase * 10_000 for _ in range(50_000)]
    write(out, "shift", seq)
    write(out, "uniform", [random.randrange(20_000) for _ in range(N)])
    # A loop over 3 000 keys, with Zipf 1.0 noise after half of its steps.
    z, seq, i = zipf(10_000, 1.0), [], 0
    while len(seq) < N:
        seq.append(10**6 + i % 3_000)
        i += 1
        if random.random() < 0.5:
            seq.append(z())
    write(out, "loopnoise", seq)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
