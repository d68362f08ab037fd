"""``make bench``: run the quick benchmarks (or the ones named), print the figures and write them to bench/results/.

The long ones run only when named: ``burst`` (an exam burst drained by the engine, about 10 minutes), ``reads``
(exam-scale reads: listing at 100,000 records, 1,000 live followers, collector ingest; about 5 minutes), ``backlog``
(100,000 queued jobs), ``k8s`` (needs a cluster), ``scale`` (the capacity model's inputs on a three-node
JetStream cluster, about 4 minutes) and ``fair`` (three tenants' bursts against the ideal fair-share schedule, under a
minute).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from bench import backlog, burst, dispatch, fair, k8s, logs, reads, results, scale, submit

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    modules = {
        "submit": submit,
        "dispatch": dispatch,
        "logs": logs,
        "k8s": k8s,
        "backlog": backlog,
        "burst": burst,
        "results": results,
        "scale": scale,
        "reads": reads,
        "fair": fair,
    }
    chosen = sys.argv[1:] or ["submit", "dispatch", "logs"]
    unknown = [name for name in chosen if name not in modules]
    if unknown:
        sys.exit(f"unknown benchmark {', '.join(unknown)}: choose from {', '.join(modules)}")
    RESULTS.mkdir(exist_ok=True)
    for name in chosen:
        report = modules[name].main()
        stamp = time.strftime("%Y%m%dT%H%M%S")
        (RESULTS / f"{name}-{stamp}.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
