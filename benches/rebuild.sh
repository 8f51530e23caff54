#!/usr/bin/env bash
# Incremental rebuild times of the `plugsconc` binary: a no-change rebuild, and a rebuild after a
# one-line edit of a CLI module (a comment line appended; the file is restored and rebuilt
# afterwards, untimed). Prints one JSON line.
#
# Usage: benches/rebuild.sh [CLI file to edit, default: crates/plugsconc/src/cli/config.rs]
set -euo pipefail
cd "$(dirname "$0")/.."
file=${1:-crates/plugsconc/src/cli/config.rs}
[ -f "$file" ] || { echo "no such file: $file" >&2; exit 1; }
backup=$(mktemp)
cp -p "$file" "$backup"
trap 'cp "$backup" "$file"; rm -f "$backup"' EXIT
seconds() { local start; start=$(date +%s.%N); "$@" >/dev/null 2>&1; echo "$(date +%s.%N) - $start" | bc; }
cargo build -q -p plugsconc
no_change=$(seconds cargo build -q -p plugsconc)
printf '\n// rebuild probe %s\n' "$(date +%s%N)" >>"$file"
cli_edit=$(seconds cargo build -q -p plugsconc)
cp "$backup" "$file"
cargo build -q -p plugsconc
echo "{\"commit\": \"$(git rev-parse --short HEAD)\", \"no_change_s\": $no_change, \"cli_edit_s\": $cli_edit}"
