"""Summarizes the workers' `busy stretch` debug lines in mlxd logs: per
stretch length (steps), the median host time per step of the scheduler
(build, dispatch, wait) and of the worker's loop around it (between steps,
of which writing tokens), and the slowest steps.

usage: stretches.py LOG...
"""
import collections
import re
import statistics
import sys

FIELDS = ("build_us", "dispatch_us", "wait_us", "between_steps_us", "write_us")


def stretches(paths):
    for path in paths:
        for line in open(path, errors="replace"):
            if "busy stretch" in line:
                yield {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", line)}


def main():
    rows = list(stretches(sys.argv[1:]))
    if not rows:
        print("no busy stretches logged (run the daemon with MLXD_LOG=info,worker=debug)")
        return
    by_steps = collections.defaultdict(list)
    for r in rows:
        by_steps[r["steps"]].append(r)
    print("steps  count  " + "  ".join(f"{f[:-3]:>9}" for f in FIELDS) + "  (median us per step)")
    for steps, group in sorted(by_steps.items(), key=lambda kv: -len(kv[1]))[:12]:
        medians = [statistics.median(r[f] for r in group) for f in FIELDS]
        print(f"{steps:5d}  {len(group):5d}  " + "  ".join(f"{m:9.0f}" for m in medians))
    print("slowest steps (us):", sorted((r["slowest_step_us"] for r in rows), reverse=True)[:8])


main()
