"""Each system's end-to-end tok/s against direct's in the same round, from
the samples of a suite's results.json: the median of the rounds' ratios and
its standard error (sqrt(pi/2) sigma / sqrt(n)), as `mlxd bench --suite`
reports it since it records `e2e_ratio` (this recomputes it for earlier
reports too).

    python3 scripts/gpu/rounds.py docs/benchmarks/*/suite-*/results.json
"""
import json
import statistics
import sys


def ratios(workload):
    samples = dict(workload["samples"])
    direct = samples["direct"]
    for system, runs in samples.items():
        if system == "direct" or len(runs) != len(direct):
            continue
        r = [a["e2e_tps"] / b["e2e_tps"] for a, b in zip(runs, direct)]
        error = 1.2533 * statistics.pstdev(r) / len(r) ** 0.5
        yield system, statistics.median(r), error, len(r)


for path in sys.argv[1:]:
    for model in json.load(open(path))["models"]:
        for w in model["workloads"]:
            cells = [f"{s} {m:.3f} ± {e:.3f}" for s, m, e, _ in ratios(w)]
            rounds = len(dict(w["samples"])["direct"])
            name = model["name"].rstrip("/").split("/")[-1]
            print(f"{path}: {name}, {w['tokens']} tokens, {rounds} rounds: " + "; ".join(cells))
