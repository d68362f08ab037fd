"""``make bench``: run every benchmark, print the figures and write them to bench/results/."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from bench import backlog, burst, dispatch, k8s, logs, submit

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    chosen = sys.argv[1:] or ["submit", "dispatch", "logs", "burst"]
    modules = {"submit": submit, "dispatch": dispatch, "logs": logs, "k8s": k8s, "backlog": backlog, "burst": burst}
    RESULTS.mkdir(exist_ok=True)
    for name in chosen:
        report = modules[name].main()
        stamp = time.strftime("%Y%m%dT%H%M%S")
        (RESULTS / f"{name}-{stamp}.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
