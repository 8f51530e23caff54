#!/usr/bin/env bash
# Sandbox start overhead (benches/src/sandbox.rs): the kv plugin started unconfined and
# sandboxed, alternating, on an idle machine and with two low-priority busy loops.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p plugsconc-bench -p kv
target=${CARGO_TARGET_DIR:-target}/release
busy_pids=()
stop_busy() {
    for pid in "${busy_pids[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
    busy_pids=()
}
trap stop_busy EXIT
for condition in idle busy; do
    if [ "$condition" = busy ]; then
        for _ in 1 2; do nice -n 19 bash -c 'while :; do :; done' & busy_pids+=($!); done
    fi
    echo "{\"condition\": \"$condition\", \"report\": $("$target/plugsconc-bench-sandbox" --plugin "$target/kv" "$@")}"
    stop_busy
done
