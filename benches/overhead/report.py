#!/usr/bin/env python3
"""Summarise the runs of benches/overhead.sh: table, PASS/FAIL checks, CSV and JSON.

Why a separate file: the shell script only measures; the arithmetic (pairing direct and
proxied runs, CPU per transaction, spread) is easier to get right and to test here.

Usage: report.py RUNS.csv META.tsv OUT_PREFIX
  RUNS.csv  one row per pgbench run (workload,clients,target,pair,seq,tps,transactions,
            cpu_seconds,load1,ok); target "direct" is the baseline of the same round
  META.tsv  "key<TAB>value" lines and "target<TAB>name<TAB>description" lines
Writes OUT_PREFIX.csv (one row per workload, clients, target) and OUT_PREFIX.json
(meta, rows, checks, runs) and prints a Markdown table and the checks to stdout.
"""

import csv
import json
import statistics
import sys

# Order in which workloads and targets are listed.
WORKLOAD_ORDER = ["select", "select-prepared", "tpcb", "masked", "masked-prepared"]
TARGET_ORDER = ["pgveil", "pgbouncer", "relay", "pgveil+allow-all", "pgveil+policy"]


def order_key(value, order):
    return (order.index(value), value) if value in order else (len(order), value)


def read_runs(path):
    runs = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            runs.append(
                {
                    "workload": r["workload"],
                    "clients": int(r["clients"]),
                    "target": r["target"],
                    "pair": int(r["pair"]),
                    "seq": int(r["seq"]),
                    "tps": float(r["tps"]),
                    "transactions": int(r["transactions"]),
                    "cpu_seconds": float(r["cpu_seconds"]) if r["cpu_seconds"] else None,
                    "load1": float(r["load1"]) if r["load1"] else None,
                    "ok": r["ok"] == "1",
                }
            )
    return runs


def read_meta(path):
    meta = {"targets": {}}
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if parts[0] == "target" and len(parts) == 3:
                meta["targets"][parts[1]] = parts[2]
            elif len(parts) == 2:
                meta[parts[0]] = parts[1]
    return meta


def summarise(runs):
    """One row per (workload, clients, target): paired means, ratio, spread, CPU/tx."""
    groups = {}
    for r in runs:
        groups.setdefault((r["workload"], r["clients"]), []).append(r)
    rows = []
    for (workload, clients), group in groups.items():
        direct = {r["pair"]: r for r in group if r["target"] == "direct" and r["ok"]}
        targets = sorted({r["target"] for r in group if r["target"] != "direct"},
                         key=lambda t: order_key(t, TARGET_ORDER))
        for target in targets:
            mine = [r for r in group if r["target"] == target]
            paired = [r for r in mine if r["ok"] and r["pair"] in direct]
            failed = len(mine) - len([r for r in mine if r["ok"]])
            row = {
                "workload": workload,
                "clients": clients,
                "target": target,
                "pairs": len(paired),
                "failed_runs": failed,
                "tps_direct": None,
                "tps_target": None,
                "ratio": None,
                "ratio_min": None,
                "ratio_max": None,
                "cpu_us_per_tx": None,
            }
            if paired:
                d = statistics.mean(direct[r["pair"]]["tps"] for r in paired)
                t = statistics.mean(r["tps"] for r in paired)
                per_pair = [r["tps"] / direct[r["pair"]]["tps"] for r in paired
                            if direct[r["pair"]]["tps"] > 0]
                row["tps_direct"] = d
                row["tps_target"] = t
                row["ratio"] = t / d if d > 0 else None
                if per_pair:
                    row["ratio_min"] = min(per_pair)
                    row["ratio_max"] = max(per_pair)
                tx = sum(r["transactions"] for r in paired)
                cpu = [r["cpu_seconds"] for r in paired if r["cpu_seconds"] is not None]
                if tx > 0 and len(cpu) == len(paired):
                    row["cpu_us_per_tx"] = sum(cpu) / tx * 1e6
            rows.append(row)
    rows.sort(key=lambda r: (order_key(r["workload"], WORKLOAD_ORDER), r["clients"],
                             order_key(r["target"], TARGET_ORDER)))
    return rows


def checks(rows):
    """pgveil's targets per workload and client count: PASS / FAIL / n/a."""
    by_key = {(r["workload"], r["clients"], r["target"]): r for r in rows}
    out = []
    for (workload, clients, target), veil in sorted(
            by_key.items(), key=lambda kv: (order_key(kv[0][0], WORKLOAD_ORDER), kv[0][1])):
        if target != "pgveil" or workload.startswith("masked"):
            continue
        bouncer = by_key.get((workload, clients, "pgbouncer"))
        relay = by_key.get((workload, clients, "relay"))
        specs = []
        if bouncer:
            specs.append(("ratio >= pgbouncer ratio", veil["ratio"], bouncer["ratio"], 1.0,
                          "ge"))
            specs.append(("cpu/tx <= pgbouncer cpu/tx", veil["cpu_us_per_tx"],
                          bouncer["cpu_us_per_tx"], 1.0, "le"))
        if relay:
            specs.append(("ratio >= 0.95 x relay ratio", veil["ratio"], relay["ratio"], 0.95,
                          "ge"))
        for name, mine, theirs, factor, op in specs:
            if mine is None or theirs is None:
                verdict = "n/a"
            elif op == "ge":
                verdict = "PASS" if mine >= factor * theirs else "FAIL"
            else:
                verdict = "PASS" if mine <= factor * theirs else "FAIL"
            out.append({"workload": workload, "clients": clients, "check": name,
                        "pgveil": mine, "other": theirs, "result": verdict})
    return out


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def table(rows):
    head = ["workload", "clients", "target", "TPS direct", "TPS via target", "ratio",
            "ratio range", "target CPU µs/tx"]
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] * 3 + ["---:"] * 5) + "|"]
    for r in rows:
        rng = "-"
        if r["ratio_min"] is not None and r["pairs"] > 1:
            rng = f"{r['ratio_min']:.3f}–{r['ratio_max']:.3f}"
        target = r["target"] + (f" ({r['failed_runs']} failed)" if r["failed_runs"] else "")
        lines.append("| " + " | ".join([
            r["workload"], str(r["clients"]), target, fmt(r["tps_direct"], ".0f"),
            fmt(r["tps_target"], ".0f"), fmt(r["ratio"], ".3f"), rng,
            fmt(r["cpu_us_per_tx"], ".1f"),
        ]) + " |")
    return "\n".join(lines)


def policy_lines(rows):
    """Masked workloads: pgveil with the policy relative to the same build with the
    allow-all policy (the issue's baseline: >= 0.95) and without any policy, and its
    ratio to direct against pgbouncer's on the same script (>= pgbouncer's)."""
    by_key = {(r["workload"], r["clients"], r["target"]): r for r in rows}
    out = []
    for (workload, clients, target), r in sorted(by_key.items()):
        if target != "pgveil+policy" or not r["tps_target"]:
            continue
        for base, label in (("pgveil+allow-all", "allow-all"), ("pgveil", "no-policy")):
            plain = by_key.get((workload, clients, base))
            if not plain or not plain["tps_target"]:
                continue
            cpu = ""
            if plain["cpu_us_per_tx"] and r["cpu_us_per_tx"]:
                cpu = (f", CPU {r['cpu_us_per_tx']:.1f} vs {plain['cpu_us_per_tx']:.1f}"
                       " µs/tx")
            ratio = r["tps_target"] / plain["tps_target"]
            verdict = ""
            if label == "allow-all":
                verdict = " PASS" if ratio >= 0.95 else " FAIL"
            out.append(f"{workload} c={clients}: policy/{label} TPS {ratio:.3f}{cpu}{verdict}")
        bouncer = by_key.get((workload, clients, "pgbouncer"))
        if bouncer and bouncer["ratio"] is not None and r["ratio"] is not None:
            verdict = "PASS" if r["ratio"] >= bouncer["ratio"] else "FAIL"
            out.append(f"{workload} c={clients}: policy ratio {r['ratio']:.3f} vs pgbouncer "
                       f"{bouncer['ratio']:.3f} {verdict}")
    return out


def main(argv):
    if len(argv) != 4:
        sys.stderr.write(__doc__)
        return 2
    runs = read_runs(argv[1])
    meta = read_meta(argv[2])
    prefix = argv[3]
    rows = summarise(runs)
    results = checks(rows)

    print()
    print(f"pgveil overhead benchmark, {meta.get('started', '?')} .. {meta.get('finished', '?')}")
    print(f"command: {meta.get('command', '?')}")
    print(f"{meta.get('postgresql', '')}; {meta.get('host_cpus', '?')} CPUs; load average "
          f"at start {meta.get('loadavg_start', '?')}, at end {meta.get('loadavg_end', '?')}")
    for name, note in meta["targets"].items():
        print(f"  {name}: {note}")
    print()
    print(table(rows))
    print()
    for line in policy_lines(rows):
        print(line)
    if results:
        print("checks (a measurement, not a gate):")
        for c in results:
            print(f"  {c['result']:4}  {c['workload']:<16} c={c['clients']:<3} pgveil "
                  f"{c['check']}: {fmt(c['pgveil'], '.3f')} vs {fmt(c['other'], '.3f')}")

    with open(prefix + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0].keys()) if rows else ["workload"])
        w.writeheader()
        for r in rows:
            w.writerow(r)
    with open(prefix + ".json", "w") as f:
        json.dump({"meta": meta, "rows": rows, "checks": results, "runs": runs}, f, indent=2)
    print()
    print(f"results: {prefix}.csv {prefix}.json {prefix}.runs.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
