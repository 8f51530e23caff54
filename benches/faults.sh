#!/usr/bin/env bash
# Fault figures (benches/src/faults): what plugsconc does when its plugins or itself are killed,
# when daemons sharing PostgreSQL lose their listener, and when the API is fed hostile input.
# Debug builds, as the tests run them. The kill storms run on an idle machine and with two
# low-priority busy loops; the other suites once. One JSON line per suite (per case for the
# hostile inputs) in target/bench/faults.jsonl, then tables.
#
# Usage: benches/faults.sh [--quick] [suite...]
#   --quick: CI-sized (a few minutes); suites: registry api crash hostile converge (default: all)
set -euo pipefail
cd "$(dirname "$0")/.."
quick=
if [ "${1:-}" = "--quick" ]; then quick=1; shift; fi
wanted=" ${*:-registry api crash hostile converge} "
cargo build -q -p plugsconc -p cat -p dog -p kv -p plugsconc-bench
target=${CARGO_TARGET_DIR:-target}/debug
case "$target" in /*) ;; *) target="$PWD/$target" ;; esac
work=$(mktemp -d)
out=${CARGO_TARGET_DIR:-target}/bench
mkdir -p "$out"
results="$out/faults.jsonl"
: >"$results"
busy_pids=()
stop_busy() {
    for pid in "${busy_pids[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
    busy_pids=()
}
trap 'stop_busy; rm -rf "$work"' EXIT
examples/plugins.sh --target "$target" --out "$work/plugins" >/dev/null

if [ -n "$quick" ]; then
    kills=20 runs=5 changes=50 cuts=1
    hostile=(--upload-mib 64 --bomb-mib 64 --tar-files 5000 --connections 200 --hold-secs 5)
else
    kills=1000 runs=100 changes=1000 cuts=3
    hostile=(--upload-mib 1024 --bomb-mib 1024 --tar-files 100000 --connections 200 --hold-secs 30)
fi

suite() { # suite <condition> <harness arguments...>: runs one suite, records its lines
    local condition=$1; shift
    case "$wanted" in *" $1 "*) ;; *) return 0 ;; esac
    echo "== $* ($condition)" >&2
    "$target/plugsconc-bench-faults" --plugins "$work/plugins" --plugsconc "$target/plugsconc" "$@" |
        python3 -c 'import json,sys
for line in sys.stdin:
    if line.strip():
        r = json.loads(line); r["condition"] = sys.argv[1]; print(json.dumps(r), flush=True)' "$condition" |
        tee -a "$results"
}

for condition in idle busy; do
    case "$wanted" in *" registry "* | *" api "*) ;; *) break ;; esac
    if [ "$condition" = busy ]; then
        for _ in 1 2; do nice -n 19 bash -c 'while :; do :; done' & busy_pids+=($!); done
    fi
    suite "$condition" registry --kills "$kills"
    suite "$condition" api --kills "$kills"
    stop_busy
done
suite idle crash --runs "$runs"
suite idle hostile "${hostile[@]}"
suite idle converge --changes "$changes" --cuts "$cuts"

python3 benches/faults_table.py "$results"
