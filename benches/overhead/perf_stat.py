#!/usr/bin/env python3
"""Per-transaction CPU, context switches and system calls of each proxy (PROFILE=1).

Why: a proxy hop on loopback costs mostly kernel work (send, wake-ups, epoll); counting
system calls and context switches per transaction shows where pgveil spends more than
pgbouncer or haproxy, independently of how busy the shared machine is.

Usage:
  perf_stat.py add CSV TARGET TPS WINDOW_S PERF_STAT_OUTPUT   append one target's counts
  perf_stat.py table CSV                                      print the per-transaction table
PERF_STAT_OUTPUT is `perf stat -x,` output taken over WINDOW_S seconds while pgbench ran
at TPS; transactions in the window are estimated as TPS x WINDOW_S.
"""

import csv
import os
import sys

# Column name in the table for each perf event.
EVENTS = {
    "task-clock": "cpu_us",
    "context-switches": "ctx_switches",
    "cpu-migrations": "migrations",
    "raw_syscalls:sys_enter": "syscalls",
    "syscalls:sys_enter_sendto": "sendto",
    "syscalls:sys_enter_recvfrom": "recvfrom",
    "syscalls:sys_enter_write": "write",
    "syscalls:sys_enter_read": "read",
    "syscalls:sys_enter_epoll_wait": "epoll_wait",
    "syscalls:sys_enter_futex": "futex",
}
FIELDS = ["target", "tps", "window_s"] + list(EVENTS.values())


def parse_perf_stat(path):
    """perf stat -x, lines: value,unit,event,... -> {event: float}."""
    counts = {}
    with open(path) as f:
        for line in f:
            if not line.strip() or line.startswith("#"):
                continue
            parts = line.rstrip("\n").split(",")
            if len(parts) < 3:
                continue
            value, unit, event = parts[0], parts[1], parts[2]
            try:
                v = float(value)
            except ValueError:
                continue  # <not supported> / <not counted>
            if event == "task-clock" and unit == "msec":
                v *= 1000.0  # to microseconds
            counts[event] = v
    return counts


def add(csv_path, target, tps, window, stat_path):
    counts = parse_perf_stat(stat_path)
    tx = float(tps) * float(window)
    row = {"target": target, "tps": f"{float(tps):.1f}", "window_s": window}
    for event, name in EVENTS.items():
        row[name] = f"{counts[event] / tx:.3f}" if event in counts and tx > 0 else ""
    new = not os.path.exists(csv_path)
    with open(csv_path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            w.writeheader()
        w.writerow(row)


def table(csv_path):
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    print("per transaction under pgbench -S -c 8 (perf stat; CPU in µs, others are counts):")
    head = FIELDS
    print("| " + " | ".join(head) + " |")
    print("|---|" + "---:|" * (len(head) - 1))
    for r in rows:
        print("| " + " | ".join(r.get(h, "") or "-" for h in head) + " |")


def main(argv):
    if len(argv) == 7 and argv[1] == "add":
        add(*argv[2:])
        return 0
    if len(argv) == 3 and argv[1] == "table":
        table(argv[2])
        return 0
    sys.stderr.write(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
