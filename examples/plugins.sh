#!/usr/bin/env bash
# Assembles a plugins folder from the example plugins: the built binaries (cat, dog, kv), the
# Python plugin, their manifests and protos, and the `.sha256` sidecars the host checks before
# every exec. Files are replaced by rename, so running it again while a daemon watches the
# folder hot-reloads the plugins.
#
# Usage: examples/plugins.sh [--target <cargo target dir>/debug] [--out plugins]
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$repo/target}/debug
out=plugins
while [ $# -gt 0 ]; do
    case "$1" in
        --target) target=$2; shift 2 ;;
        --out) out=$2; shift 2 ;;
        *) echo "usage: $0 [--target DIR] [--out DIR]" >&2; exit 2 ;;
    esac
done

# put <source> <destination>: copy beside, then rename over (a running binary cannot be written).
put() {
    cp "$1" "$2.new"
    mv -f "$2.new" "$2"
}

sidecar() { # sidecar <plugin dir> <entry point file name>
    (cd "$1" && sha256sum "$2" > "$2.sha256.new" && mv -f "$2.sha256.new" "$2.sha256")
}

for name in cat dog kv; do
    if [ ! -x "$target/$name" ]; then
        echo "$target/$name is missing: run cargo build --workspace first" >&2
        exit 1
    fi
    mkdir -p "$out/$name"
    put "$target/$name" "$out/$name/$name"
    sidecar "$out/$name" "$name"
    put "$repo/examples/$name/manifest.yaml" "$out/$name/manifest.yaml"
done
# The protos beside a plugin let the daemon's call endpoint transcode JSON; dog ships none, so
# the daemon reads its descriptors from the plugin's gRPC reflection instead.
rm -rf "$out/dog/proto"
for pair in cat:animalpb/animal.proto kv:kvpb/kv.proto; do
    name=${pair%%:*}
    proto=${pair#*:}
    mkdir -p "$out/$name/proto/$(dirname "$proto")"
    put "$repo/proto/$proto" "$out/$name/proto/$proto"
done

python="$out/python-animal"
mkdir -p "$python/proto/animalpb" "$python/proto/pluginpb"
# Pin the interpreter that has grpcio: the OS sandbox lets a plugin exec its own interpreter,
# not a PATH lookup through shims (which would need to start more processes).
interpreter=$(python3 -c 'import sys; print(sys.executable)')
{ echo "#!$interpreter"; tail -n +2 "$repo/examples/python-animal/plugin"; } > "$python/plugin.new"
mv -f "$python/plugin.new" "$python/plugin"
chmod +x "$python/plugin"
put "$repo/proto/animalpb/animal.proto" "$python/proto/animalpb/animal.proto"
put "$repo/proto/pluginpb/plugin.proto" "$python/proto/pluginpb/plugin.proto"
sidecar "$python" plugin
put "$repo/examples/python-animal/manifest.yaml" "$python/manifest.yaml"

echo "example plugins ready in $out: cat dog kv python-animal"
