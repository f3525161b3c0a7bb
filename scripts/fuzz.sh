#!/usr/bin/env bash
# Runs every libFuzzer target for a bounded time (FUZZ_SECONDS each, default 30).
# cargo-fuzz needs nightly features; the project's only toolchain is stable, so it is built with
# RUSTC_BOOTSTRAP=1 and no sanitizer (-s none): coverage-guided libFuzzer, panics are crashes.
# New interesting inputs go to fuzz/corpus/<target>/ (commit the useful ones); crashes to
# fuzz/artifacts/<target>/ and make this script fail.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-30}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version 0.13.2
export RUSTC_BOOTSTRAP=1
targets=(resp pika_frames rdb engine)
for t in "${targets[@]}"; do
  cargo fuzz build -s none -O "$t" >/dev/null 2>&1
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  echo "== fuzz $t for ${SECONDS_EACH}s"
  # Fresh finds go to a scratch dir so a CI run leaves the committed corpus untouched.
  scratch=$(mktemp -d)
  if ! cargo fuzz run -s none -O "$t" "$scratch" "fuzz/corpus/$t" -- \
      -max_total_time="$SECONDS_EACH" -max_len=65536 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="fuzz/artifacts/$t/" 2>"fuzz/artifacts/$t.log"; then
    tail -40 "fuzz/artifacts/$t.log"
    echo "fuzz target $t crashed; the input is in fuzz/artifacts/$t/"
    rm -rf "$scratch"
    exit 1
  fi
  grep -E "stat::number_of_executed_units|stat::new_units_added" "fuzz/artifacts/$t.log" | tr '\n' ' '
  echo
  if [ -n "${FUZZ_KEEP_CORPUS:-}" ]; then cp -n "$scratch"/* "fuzz/corpus/$t/" 2>/dev/null || true; fi
  rm -rf "$scratch"
done
echo "fuzz: every target ran ${SECONDS_EACH}s without a crash"
