#!/usr/bin/env bash
# Catalog benchmarks (benches/src/catalog.rs) on an idle machine and with two low-priority busy
# loops: discovery of 1,000 generated plugin folders, checksum throughput, a built-in call through
# its registry handle, and reload swap time with failed calls under a steady 1,000 calls/s. The
# reloads run twice: with the release example binaries as built (with line tables) and stripped,
# since every launch hashes the binary.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p plugsconc-bench -p cat -p dog
target=${CARGO_TARGET_DIR:-target}/release
stripped=$(mktemp -d)
busy_pids=()
stop_busy() {
    for pid in "${busy_pids[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
    busy_pids=()
}
trap 'stop_busy; rm -rf "$stripped"' EXIT
strip -o "$stripped/cat" "$target/cat"
strip -o "$stripped/dog" "$target/dog"
echo "binaries: $(stat -c %s "$target/cat") bytes as built, $(stat -c %s "$stripped/cat") stripped" >&2
for condition in idle busy; do
    if [ "$condition" = busy ]; then
        for _ in 1 2; do nice -n 19 bash -c 'while :; do :; done' & busy_pids+=($!); done
    fi
    echo "{\"condition\": \"$condition\", \"binaries\": \"as built\", \"report\":"
    "$target/plugsconc-bench-catalog" --cat "$target/cat" --dog "$target/dog"
    echo "}"
    echo "{\"condition\": \"$condition\", \"binaries\": \"stripped\", \"report\":"
    "$target/plugsconc-bench-catalog" --cat "$stripped/cat" --dog "$stripped/dog" --folders 10 --runs 1 --builtin-calls 1000
    echo "}"
    stop_busy
done
