#!/usr/bin/env bash
# Throughput of the daemon's persistent log queue (`plugsconc-bench-logs`):
# N tracing events through the queue's layer into its SQLite outbox and on into the rotating
# log file, set up as the daemon sets them up. Per run: seconds and lines/s until every line was
# acknowledged (committed to SQLite) and until every line was in the log file; the run fails
# unless the log files hold exactly N lines. Runs alternate between an idle machine and two
# low-priority busy loops; one JSON line per run, then medians per condition.
#
# Usage: benches/logqueue.sh [lines per run, default 200000] [runs per condition, default 3]
#        [more plugsconc-bench-logs arguments, e.g. --remove-on-complete]
set -euo pipefail
cd "$(dirname "$0")/.."
lines=${1:-200000}
runs=${2:-3}
shift $(($# < 2 ? $# : 2))
cargo build --release -q -p plugsconc-bench --bin plugsconc-bench-logs
target=${CARGO_TARGET_DIR:-target}/release
results=$(mktemp)
busy_pids=()
stop_busy() {
    for pid in "${busy_pids[@]:-}"; do [ -n "$pid" ] && kill "$pid" 2>/dev/null || true; done
    busy_pids=()
}
trap 'stop_busy; rm -f "$results"' EXIT
for _ in $(seq "$runs"); do
    for condition in idle busy; do
        if [ "$condition" = busy ]; then
            for _ in 1 2; do nice -n 19 bash -c 'while :; do :; done' & busy_pids+=($!); done
        fi
        report=$("$target/plugsconc-bench-logs" --lines "$lines" "$@")
        stop_busy
        echo "{\"condition\": \"$condition\", \"report\": $report}" | tee -a "$results"
    done
done
python3 - "$results" <<'PY'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
print(f"\n{'condition':<10}{'runs':>5}{'ack lines/s':>14}{'file lines/s':>14}"
      f"{'ack s':>9}{'file s':>9}   (medians; file lines/s min-max)")
for condition in ("idle", "busy"):
    rs = [r["report"] for r in rows if r["condition"] == condition]
    if not rs:
        continue
    med = lambda key: statistics.median(r[key] for r in rs)
    file_rates = [r["file_lines_per_s"] for r in rs]
    print(f"{condition:<10}{len(rs):>5}{med('ack_lines_per_s'):>14,.0f}{med('file_lines_per_s'):>14,.0f}"
          f"{med('ack_seconds'):>9.3f}{med('file_seconds'):>9.3f}   "
          f"{min(file_rates):,.0f}-{max(file_rates):,.0f}")
PY
