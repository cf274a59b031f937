#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for SECONDS each (default 60), one after another, and
# prints the CPU seconds each used. Needs nightly Rust and cargo-fuzz
# (`cargo install cargo-fuzz`); the normal build and tests need neither.
# A crash leaves its input in fuzz/artifacts/TARGET/ and stops the script (exit 1).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-60}
targets=$(cargo +nightly fuzz list)
cargo +nightly fuzz build -O
for t in $targets; do
  /usr/bin/time -f "$t: %U s user + %S s system CPU, %M KiB peak RSS" \
    cargo +nightly fuzz run -O "$t" -- -max_total_time="$secs" -rss_limit_mb=2048 \
      -max_len=65536 2>&1 | grep -E "^(#[0-9]+ +DONE|==|SUMMARY|Done)|CPU|panicked|Test unit written" || true
  if ls artifacts/"$t"/crash-* artifacts/"$t"/oom-* artifacts/"$t"/timeout-* >/dev/null 2>&1; then
    echo "$t: found a failing input in fuzz/artifacts/$t" >&2
    exit 1
  fi
done
