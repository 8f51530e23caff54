#!/usr/bin/env bash
# Builds the go-plugin interop binaries into <outdir>: kvplugin-go (a KV + Counter plugin) and
# kvhost-go (a host that drives any KV plugin, or benchmarks it). GOPATH mode against Debian's Go
# packages, so the build works offline without the Go module proxy; generated code stays in <outdir>.
#
# Needs: golang-go golang-github-hashicorp-go-plugin-dev golang-google-grpc-dev
#        golang-goprotobuf-dev protobuf-compiler
set -euo pipefail
out=$(realpath -m "${1:?usage: interop/go/build.sh <outdir>}")
here=$(cd "$(dirname "$0")" && pwd)
proto_root=$(cd "$here/../../proto" && pwd)
module=plugsconc-interop
gopath="$out/gopath"
src="$gopath/src/$module"

rm -rf "$src"
mkdir -p "$src"
# One protoc run per file: protoc-gen-go 1.3 wants one Go package per invocation.
for proto in kvpb/kv.proto counterpb/counter.proto; do
    protoc -I "$proto_root" --go_out="plugins=grpc,paths=source_relative:$src" "$proto"
done
cp -r "$here/shared" "$here/kvplugin" "$here/kvhost" "$src/"

export GO111MODULE=off GOFLAGS= GOPATH="$gopath:/usr/share/gocode"
export GOCACHE="${GOCACHE:-$out/gocache}"
go build -o "$out/kvplugin-go" "$module/kvplugin"
go build -o "$out/kvhost-go" "$module/kvhost"
echo "built $out/kvplugin-go and $out/kvhost-go"
