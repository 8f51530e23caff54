#!/usr/bin/env bash
# Side-by-side benchmark: plugsconc (Rust host + Rust kv plugin) against HashiCorp go-plugin (Go
# host + Go kv plugin), in one run, alternating, on an idle machine and with two low-priority busy
# loops keeping the CPUs awake (see docs/src/benchmarks.md for why both conditions matter).
#
#   benches/run.sh [rounds]     # default 2 rounds per condition; results in target/bench/
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-2}
out=target/bench
mkdir -p "$out"
results="$out/results.jsonl"
: > "$results"

cargo build --release -q -p kv -p plugsconc-bench
bash interop/go/build.sh target/interop-go >/dev/null
rust_bench=target/release/plugsconc-bench
rust_plugin=target/release/kv
go_host=target/interop-go/kvhost-go
go_plugin=target/interop-go/kvplugin-go

busy_pids=()
stop_busy() {
    for pid in "${busy_pids[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
    busy_pids=()
}
trap stop_busy EXIT

record() { # condition, then the JSON line on stdin
    python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); r["condition"]=sys.argv[1]; print(json.dumps(r))' "$1" >> "$results"
}

for condition in idle busy; do
    if [ "$condition" = busy ]; then
        for _ in 1 2; do nice -n 19 bash -c 'while :; do :; done' & busy_pids+=($!); done
    fi
    for round in $(seq "$rounds"); do
        echo "== $condition, round $round" >&2
        for tls in "" "-automtls"; do
            "$go_host" -mode bench -plugin "$go_plugin" $tls | record "$condition"
            "$rust_bench" --plugin "$rust_plugin" ${tls:+--automtls} | record "$condition"
        done
        "$rust_bench" --plugin "$rust_plugin" --transport tcp | record "$condition"
    done
    stop_busy
done

python3 benches/summary.py "$results"
