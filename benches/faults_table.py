"""Tables of benches/faults.sh's JSON lines (one per suite, one per hostile case)."""
import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]


def table(header, lines):
    widths = [max(len(str(c)) for c in column) for column in zip(header, *lines)]
    fmt = "| " + " | ".join(f"{{:<{w}}}" for w in widths) + " |"
    print(fmt.format(*header))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in lines:
        print(fmt.format(*line))
    print()


def ms(value):
    return "—" if value is None else f"{value:,.0f}"


storms = [r for r in rows if r.get("suite", "").startswith("kill storm")]
if storms:
    print("Kill storms: 8 callers calling continuously, `kill -9` of the plugin's process, each after"
          " the restarted plugin answered")
    print(f"(restart schedule: {json.dumps(storms[0]['backoff'])})\n")
    table(
        ["through", "condition", "kills", "calls", "ok", "failed in flight", "sent to dead process",
         "refused", "other", "longest gap ms", "kill→answer p50/max ms", "zombies (max seen / end)",
         "orphans after shutdown"],
        [[r["suite"].split(", ")[1], r["condition"], f"{r['kills']}/{r['kills_asked']}",
          f"{r['calls']:,}", f"{r['calls_ok']:,}", r["failed_in_flight"],
          r["failed_sent_to_dead_process"], r["failed_refused"],
          sum(r["failed_other"].values()) if r["failed_other"] else 0,
          ms(r["longest_gap_ms"]),
          f"{ms(r['kill_to_answer_ms']['p50'])}/{ms(r['kill_to_answer_ms']['max'])}",
          f"{r['zombies_sampled_max']}/{r['zombies_at_end']}", r["orphans_after_shutdown"]]
         for r in storms],
    )
    for r in storms:
        if r["failed_other"] or r["restart_never_answered"]:
            print(f"  {r['suite']} ({r['condition']}): other failures {r['failed_other']},"
                  f" restarts never answered {r['restart_never_answered']}")

for r in rows:
    if r.get("suite") == "daemon crash points":
        print("Daemon crash points: `kill -9` of the daemon at a random point of an operation, restart,"
              " catalog / plugins folder / store compared\n")
        table(
            ["runs", "operations", "answered before the kill", "disagreements", "lost jobs", "leftovers", "plugins left running by the killed daemon",
             "restart→settled p50 ms", "seconds"],
            [[r["runs"], ", ".join(f"{k} {v}" for k, v in r["operations"].items()),
              r["answered_before_the_kill"], r["disagreements"],
              r["lost_jobs"], r["leftovers"], r["plugins_running_after_daemon_kill"],
              ms(r["restart_to_settled_ms_p50"]), f"{r['seconds']:.0f}"]],
        )
        for d in r["disagreement_details"] + r["leftover_details"]:
            print(f"  {d}")
        print()

cases = [r for r in rows if r.get("suite") == "hostile input" and "case" in r]
if cases:
    print("Hostile API input (one daemon, cases in turn; health polled on fresh connections every 100 ms)\n")
    table(
        ["input", "answer", "health answered", "daemon alive", "peak RSS MiB"],
        [[c["input"], c["outcome"][:90], f"{c['health_answered']}/{c['health_answered'] + c['health_not_answered']}",
          "yes" if c["daemon_alive"] else "NO", c["peak_rss_mib"]] for c in cases],
    )

for r in rows:
    if r.get("suite") == "two daemons on PostgreSQL":
        if "skipped" in r:
            print(f"Two daemons on PostgreSQL: SKIPPED ({r['skipped']})\n")
            continue
        print("Two daemons on one PostgreSQL store: changes through each in turn, listener connections cut\n")
        table(
            ["changes", "listener cuts", "disagreements", "converged after ms", "changes took s",
             "answer p50 ms", "answers"],
            [[r["changes"], f"{r['listener_connections_cut']}/{r['listener_cuts_asked']}", r["disagreements"],
              ms(r["converged_ms"]), f"{r['changes_seconds']:.0f}",
              ", ".join(f"{k} {ms(v)}" for k, v in r.get("answer_ms_p50", {}).items()),
              ", ".join(f"{k}: {v}" for k, v in r["outcomes"].items())]],
        )
        for d in r["disagreement_details"]:
            print(f"  {d}")
