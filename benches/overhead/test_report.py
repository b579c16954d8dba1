#!/usr/bin/env python3
"""Tests of report.py's arithmetic: pairing, ratio, CPU per transaction and the checks.

Run: python3 benches/overhead/test_report.py
"""

import csv
import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import report  # noqa: E402


def run(workload, clients, target, pair, tps, tx, cpu=None, ok=True):
    return {"workload": workload, "clients": clients, "target": target, "pair": pair,
            "seq": 0, "tps": tps, "transactions": tx, "cpu_seconds": cpu, "load1": 1.0,
            "ok": ok}


class Summarise(unittest.TestCase):
    def test_ratio_uses_the_direct_runs_of_the_same_rounds(self):
        runs = [
            run("select", 8, "direct", 1, 1000.0, 15000),
            run("select", 8, "pgveil", 1, 900.0, 13500, cpu=0.27),
            run("select", 8, "direct", 2, 2000.0, 30000),
            run("select", 8, "pgveil", 2, 1900.0, 28500, cpu=0.57),
        ]
        (row,) = report.summarise(runs)
        self.assertAlmostEqual(row["tps_direct"], 1500.0)
        self.assertAlmostEqual(row["tps_target"], 1400.0)
        self.assertAlmostEqual(row["ratio"], 1400.0 / 1500.0)
        self.assertAlmostEqual(row["ratio_min"], 0.9)
        self.assertAlmostEqual(row["ratio_max"], 0.95)
        # (0.27 + 0.57) s over 42000 transactions = 20 µs each.
        self.assertAlmostEqual(row["cpu_us_per_tx"], 20.0)

    def test_failed_runs_and_their_pairs_are_left_out(self):
        runs = [
            run("tpcb", 1, "direct", 1, 500.0, 7500),
            run("tpcb", 1, "relay", 1, 0.0, 0, cpu=0.1, ok=False),
            run("tpcb", 1, "direct", 2, 400.0, 6000),
            run("tpcb", 1, "relay", 2, 380.0, 5700, cpu=0.057),
            run("tpcb", 1, "direct", 3, 300.0, 4500, ok=False),
            run("tpcb", 1, "relay", 3, 290.0, 4350, cpu=0.05),
        ]
        (row,) = report.summarise(runs)
        self.assertEqual(row["pairs"], 1)
        self.assertEqual(row["failed_runs"], 1)
        self.assertAlmostEqual(row["ratio"], 0.95)
        self.assertAlmostEqual(row["cpu_us_per_tx"], 10.0)

    def test_no_usable_pair_gives_empty_numbers(self):
        runs = [run("select", 1, "direct", 1, 100.0, 1500, ok=False),
                run("select", 1, "pgbouncer", 1, 90.0, 1350, cpu=0.01)]
        (row,) = report.summarise(runs)
        self.assertIsNone(row["ratio"])
        self.assertIsNone(row["cpu_us_per_tx"])
        self.assertIn("| - |", report.table([row]))


class Checks(unittest.TestCase):
    def rows(self, veil_ratio, veil_cpu, bouncer_ratio, bouncer_cpu, relay_ratio):
        runs = []
        for target, ratio, cpu in [("pgveil", veil_ratio, veil_cpu),
                                   ("pgbouncer", bouncer_ratio, bouncer_cpu),
                                   ("relay", relay_ratio, 1.0)]:
            runs.append(run("select", 8, "direct", 1, 1000.0, 1000))
            runs.append(run("select", 8, target, 1, 1000.0 * ratio, 1000, cpu=cpu * 1e-3))
        return report.summarise(runs[:1] + [r for r in runs if r["target"] != "direct"])

    def verdicts(self, rows):
        return {c["check"]: c["result"] for c in report.checks(rows)}

    def test_pass(self):
        v = self.verdicts(self.rows(0.97, 20.0, 0.90, 25.0, 1.0))
        self.assertEqual(set(v.values()), {"PASS"})
        self.assertEqual(len(v), 3)

    def test_each_check_can_fail(self):
        v = self.verdicts(self.rows(0.89, 26.0, 0.90, 25.0, 1.0))
        self.assertEqual(v["ratio >= pgbouncer ratio"], "FAIL")
        self.assertEqual(v["cpu/tx <= pgbouncer cpu/tx"], "FAIL")
        self.assertEqual(v["ratio >= 0.95 x relay ratio"], "FAIL")

    def test_masked_workloads_are_not_checked(self):
        runs = [run("masked", 8, "direct", 1, 100.0, 100),
                run("masked", 8, "pgveil", 1, 90.0, 90, cpu=0.001),
                run("masked", 8, "pgveil+policy", 1, 80.0, 80, cpu=0.001)]
        rows = report.summarise(runs)
        self.assertEqual(report.checks(rows), [])
        (line,) = report.policy_lines(rows)
        self.assertIn("policy/no-policy TPS 0.889", line)

    def test_masked_policy_is_judged_against_allow_all(self):
        runs = [run("masked", 8, "direct", 1, 100.0, 100),
                run("masked", 8, "pgveil", 1, 90.0, 90, cpu=0.001),
                run("masked", 8, "pgveil+allow-all", 1, 84.0, 84, cpu=0.001),
                run("masked", 8, "pgveil+policy", 1, 80.0, 80, cpu=0.001)]
        lines = report.policy_lines(report.summarise(runs))
        self.assertEqual(len(lines), 2)
        self.assertIn("policy/allow-all TPS 0.952", lines[0])
        self.assertTrue(lines[0].endswith("PASS"))

    def test_masked_policy_ratio_is_judged_against_pgbouncer_on_the_same_script(self):
        runs = [run("masked", 8, "direct", 1, 100.0, 100),
                run("masked", 8, "pgveil+policy", 1, 80.0, 80, cpu=0.001),
                run("masked", 8, "pgbouncer", 1, 82.0, 82, cpu=0.001)]
        (line,) = report.policy_lines(report.summarise(runs))
        self.assertIn("policy ratio 0.800 vs pgbouncer 0.820", line)
        self.assertTrue(line.endswith("FAIL"))
        runs[2] = run("masked", 8, "pgbouncer", 1, 78.0, 78, cpu=0.001)
        (line,) = report.policy_lines(report.summarise(runs))
        self.assertTrue(line.endswith("PASS"))


class EndToEnd(unittest.TestCase):
    def test_main_writes_csv_and_json(self):
        with tempfile.TemporaryDirectory() as d:
            runs_path = os.path.join(d, "r.runs.csv")
            with open(runs_path, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["workload", "clients", "target", "pair", "seq", "tps",
                            "transactions", "cpu_seconds", "load1", "ok"])
                w.writerow(["select", 1, "direct", 1, 0, 100.5, 1507, "", 0.5, 1])
                w.writerow(["select", 1, "pgveil", 1, 1, 99.5, 1492, 0.03, 0.5, 1])
            meta_path = os.path.join(d, "meta.tsv")
            with open(meta_path, "w") as f:
                f.write("started\t2026-01-01T00:00:00Z\ntarget\tpgveil\tpgveil 0.1.0\n")
            prefix = os.path.join(d, "r")
            with open(os.devnull, "w") as devnull:
                old, sys.stdout = sys.stdout, devnull
                try:
                    self.assertEqual(report.main(["report.py", runs_path, meta_path, prefix]),
                                     0)
                finally:
                    sys.stdout = old
            with open(prefix + ".json") as f:
                data = json.load(f)
            self.assertEqual(data["meta"]["targets"]["pgveil"], "pgveil 0.1.0")
            self.assertAlmostEqual(data["rows"][0]["ratio"], 99.5 / 100.5)
            with open(prefix + ".csv", newline="") as f:
                self.assertEqual(len(list(csv.DictReader(f))), 1)


if __name__ == "__main__":
    unittest.main()
