#!/usr/bin/env bash
# The loom job: model-check cogwheel's lock-free structures (loom-tests/tests/*.rs).
# Usage: .ci/loom.sh [test-name filter]
set -euo pipefail
cd "$(dirname "$0")/.."
export RUSTFLAGS="${RUSTFLAGS:-} --cfg loom --cfg crossbeam_loom --cfg crossbeam_sanitize -C debug-assertions"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
export LOOM_MAX_BRANCHES="${LOOM_MAX_BRANCHES:-10000}"
# RUSTFLAGS differ from the normal build: keep a separate target dir so neither rebuilds the other.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target/loom}"
cargo test -p loom-tests --release -- --nocapture "$@"
