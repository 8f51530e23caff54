"""Summarises benches/run.sh results: medians per (condition, implementation, transport, TLS)
and the ratios of plugsconc against go-plugin that the targets are stated in."""

import json
import statistics
import sys
from collections import defaultdict

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
groups = defaultdict(list)
for r in rows:
    groups[(r["condition"], r["impl"], r["transport"], r["automtls"])].append(r)


def med(values):
    return statistics.median(values) if values else float("nan")


def figures(rs):
    tp = defaultdict(list)
    for r in rs:
        for t in r["throughput"]:
            tp[t["callers"]].append(t["calls_per_sec"])
    return {
        "p50_us": med([r["seq"]["p50_us"] for r in rs]),
        "p99_us": med([r["seq"]["p99_us"] for r in rs]),
        "tp1": med(tp[1]),
        "tp8": med(tp[8]),
        "tp64": med(tp[64]),
        "startup_ms": med([r["startup"]["p50_ms"] for r in rs]),
        "rss_kb": med([r["host_rss_kb_per_plugin"] for r in rs]),
    }


summary = {k: figures(v) for k, v in groups.items()}
header = f"{'condition':9} {'impl':10} {'transport':9} {'tls':5} {'p50 µs':>8} {'p99 µs':>8} {'1 c/s':>9} {'8 c/s':>9} {'64 c/s':>9} {'start ms':>9} {'RSS kB':>8}"
print(header)
for (cond, impl, transport, tls), f in sorted(summary.items()):
    print(
        f"{cond:9} {impl:10} {transport:9} {str(tls):5} {f['p50_us']:8.1f} {f['p99_us']:8.1f} "
        f"{f['tp1']:9.0f} {f['tp8']:9.0f} {f['tp64']:9.0f} {f['startup_ms']:9.2f} {f['rss_kb']:8.0f}"
    )

print("\nplugsconc / go-plugin (unix socket); targets: p50 <= 0.5, 64-caller throughput >= 2, plain start-up <= 0.5, AutoMTLS start-up <= 0.2")
for cond in ("idle", "busy"):
    for tls in (False, True):
        ours = summary.get((cond, "plugsconc", "unix", tls))
        theirs = summary.get((cond, "go-plugin", "unix", tls))
        if not ours or not theirs:
            continue
        print(
            f"{cond:5} {'automtls' if tls else 'plain':8}  p50 {ours['p50_us'] / theirs['p50_us']:.2f}  "
            f"64-caller throughput {ours['tp64'] / theirs['tp64']:.2f}  "
            f"start-up {ours['startup_ms'] / theirs['startup_ms']:.2f}"
        )
