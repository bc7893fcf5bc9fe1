#!/usr/bin/env bash
# Runs the scenario engine's test-driver variant (issue 11) for several seeds,
# one after another, and prints each seed's FIGURE line or failure. When a
# controller logs that SQLite's write lock stayed busy past the timeout
# (`holder=`), it saves that controller's thread stacks (gdb) and log.
#
# Usage: scripts/scenario-seeds.sh FIRST LAST [STEPS]   (default 200 steps)
# Env:   OUT (default /var/tmp/kumo-scenario-seeds) for logs and stacks; the
#        test environment of scripts/test.sh (KUMO_E2E=1, KUMO_TEST_IMAGE_DIR).
# Build first: cargo build --workspace --bins && cargo test --workspace --test e2e --no-run
set -euo pipefail

first=${1:?first seed}; last=${2:?last seed}; steps=${3:-200}
out=${OUT:-/var/tmp/kumo-scenario-seeds}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$out"
bin=$(ls -t "$root"/target/debug/deps/e2e-* | grep -v '\.d$' | head -1)
cd "$root/tests"
for seed in $(seq "$first" "$last"); do
  log="$out/seed-$seed.log"
  KUMO_E2E=1 KUMO_SCENARIO_SEED=$seed KUMO_SCENARIO_STEPS=$steps \
    "$bin" a_longer_seeded_scenario_on_a_test_driver_host --ignored --nocapture >"$log" 2>&1 &
  test_pid=$!
  while kill -0 "$test_pid" 2>/dev/null; do
    for dir in /var/tmp/kumo-e2e-*; do
      [[ -f $dir/controller.log ]] || continue
      name=$(basename "$dir")
      if grep -q "write lock was busy" "$dir/controller.log" && [[ ! -e $out/$name-threads.txt ]]; then
        pid=$(pgrep -f "kumo-api --config $dir/controller.toml" | head -1 || true)
        if [[ -n $pid ]] && command -v gdb >/dev/null; then
          gdb -p "$pid" -batch -ex "thread apply all bt 25" >"$out/$name-threads.txt" 2>&1 || true
        fi
        cp "$dir/controller.log" "$out/$name-controller.log"
      fi
    done
    sleep 2
  done
  if wait "$test_pid"; then
    grep -h "FIGURE" "$log" || echo "seed $seed: passed"
  else
    echo "seed $seed: FAILED, see $log"
    grep -h "failed after" "$log" | cut -c1-300 || true
  fi
done
