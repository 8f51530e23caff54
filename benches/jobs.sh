#!/usr/bin/env bash
# Job pool throughput (`plugsconc-bench-jobs`): jobs/s through the durable queue with the no-op
# task and with a plugin call (kv.KV/Echo on the release kv plugin, JSON in and out), on SQLite
# and, when it is running, on PostgreSQL (PLUGSCONC_TEST_DATABASE_URL, by default the local one); alternating, on an idle machine and with two
# low-priority busy loops. Prints one JSON line per run.
#
# Usage: benches/jobs.sh [jobs per run, default 5000]
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=${1:-5000}
cargo build --release -q -p plugsconc -p plugsconc-bench --bin plugsconc-bench-jobs -p kv -p cat -p dog
target=${CARGO_TARGET_DIR:-target}/release
case "$target" in /*) ;; *) target="$PWD/$target" ;; esac
work=$(mktemp -d)
busy_pids=()
stop_busy() {
    for pid in "${busy_pids[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
    busy_pids=()
}
trap 'stop_busy; rm -rf "$work"' EXIT
examples/plugins.sh --target "$target" --out "$work/plugins" >/dev/null
stores=("")
# The PostgreSQL database of the tests and benchmarks.
database_url=${PLUGSCONC_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
if pg_isready -d "$database_url" -q 2>/dev/null; then
    stores+=("$database_url")
fi
for condition in idle busy; do
    if [ "$condition" = busy ]; then
        for _ in 1 2; do nice -n 19 bash -c 'while :; do :; done' & busy_pids+=($!); done
    fi
    for store in "${stores[@]}"; do
        for task in noop call; do
            args=(--task "$task" --jobs "$jobs" --plugins "$work/plugins")
            [ -n "$store" ] && args+=(--store "$store")
            report=$(cd "$work" && "$target/plugsconc-bench-jobs" "${args[@]}" 2>/dev/null)
            echo "{\"condition\": \"$condition\", \"report\": $report}"
        done
    done
    stop_busy
done
