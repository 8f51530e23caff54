#!/usr/bin/env bash
# Load test of the daemon's REST API with wrk (apt-get install wrk), bounded in time: the
# release daemon on a temporary copy of the example plugins, then `GET /api/v1/plugins` and the
# generic call endpoint (`POST .../cat/call/animal.Animal/Speak`, JSON in and out, a gRPC round
# trip to the cat plugin per request). Prints requests/s, latency and errors for each.
#
# Usage: benches/api-load.sh [seconds per run, default 10] [connections, default 16]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-10}
connections=${2:-16}
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
cargo build --release -q -p plugsconc -p cat -p dog -p kv
target=${CARGO_TARGET_DIR:-target}/release
work=$(mktemp -d)
daemon=
cleanup() {
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
examples/plugins.sh --target "$target" --out "$work/plugins" >/dev/null
port=$((20000 + RANDOM % 20000))
(cd "$work" && exec "$OLDPWD/$target/plugsconc" serve --set "api.listen=127.0.0.1:$port" \
    --set logging.log_level=warn >"$work/daemon.out" 2>"$work/daemon.err") &
daemon=$!
for _ in $(seq 100); do grep -q listening "$work/daemon.out" 2>/dev/null && break; sleep 0.1; done
token=$(cat "$work/data/api-token")
base="http://127.0.0.1:$port"
curl -sf -X POST -H "Authorization: Bearer $token" -d '{"isLoud":true}' \
    "$base/api/v1/plugins/cat/call/animal.Animal/Speak" >/dev/null

cat >"$work/call.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"isLoud": true}'
wrk.headers["Authorization"] = "Bearer $token"
wrk.headers["Content-Type"] = "application/json"
LUA

run() { # run <label> <wrk args...>
    local label=$1; shift
    local out
    out=$(wrk -t2 -c"$connections" -d"${seconds}s" --latency "$@")
    local rps p50 p99 errors non2xx
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    errors=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' <<<"$out")
    non2xx=$(awk '/Non-2xx/ {print $5}' <<<"$out")
    printf '%-26s %10s req/s  p50 %-8s p99 %-8s socket errors %s  non-2xx %s\n' \
        "$label" "$rps" "$p50" "$p99" "${errors:-0}" "${non2xx:-0}"
}
echo "wrk: 2 threads, $connections connections, ${seconds}s each, on $(nproc) CPUs"
run "GET /api/v1/plugins" "$base/api/v1/plugins"
run "POST call cat Speak" -s "$work/call.lua" "$base/api/v1/plugins/cat/call/animal.Animal/Speak"
