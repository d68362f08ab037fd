"""The figures of docs/benchmarks.md, drawn from the newest results in bench/results/ (``python -m bench.plots``).

One PNG per scenario under docs/img/: ``bench-submit.png`` (accepted jobs/s and latency against the raw publish
loop), ``bench-burst.png`` (jobs finished over time and the queue-wait distribution, Hades against docker-py) and
``bench-scale.png`` (the drain rate with 1, 2 and 3 dispatchers on the R3 cluster, against the model).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
IMAGES = ROOT / "docs" / "img"


def newest(name: str) -> dict[str, Any] | None:
    found = sorted(RESULTS.glob(f"{name}-*.json"))
    return json.loads(found[-1].read_text()) if found else None


def plot_submit(report: dict[str, Any]) -> Path:
    fig, (rate, latency) = plt.subplots(1, 2, figsize=(9, 3.5))
    names = ["raw publish\n(64 in flight)", "submit\nPOST /jobs"]
    values = [report["baseline_raw_publish_per_s"], report["submit_accepted_per_s"]]
    rate.bar(names, values, color=["#999999", "#1f77b4"])
    rate.axhline(3000, color="#d62728", linestyle="--", label="target 3,000/s")
    rate.set_ylabel("jobs/s")
    rate.set_title(f"throughput (ratio {report['ratio_to_baseline']:.2f})")
    rate.legend(loc="upper right")
    latency.bar(["p50", "p99"], [report["p50_ms"], report["p99_ms"]], color="#1f77b4")
    latency.axhline(30, color="#d62728", linestyle="--", label="p99 target 30 ms")
    latency.set_ylabel("ms")
    latency.set_title(f"submit latency, {report['connections']} connections")
    latency.legend(loc="upper left")
    fig.tight_layout()
    out = IMAGES / "bench-submit.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_burst(report: dict[str, Any]) -> Path:
    series = report["series"]
    fig, (drain, waits) = plt.subplots(1, 2, figsize=(10, 3.8))
    for key, label, colour in (
        ("hades_finished_at_s", "Hades", "#1f77b4"),
        ("raw_docker_finished_at_s", "docker-py", "#999999"),
    ):
        times = series[key]
        drain.plot(times, range(1, len(times) + 1), label=label, color=colour)
    drain.set_xlabel("s since the first POST")
    drain.set_ylabel("jobs finished")
    drain.set_title(f"{report['jobs']} jobs, concurrency {report['concurrency']} (ratio {report['ratio_drain']:.2f})")
    drain.legend(loc="lower right")
    for key, label, colour in (
        ("hades_queue_wait_s", "Hades", "#1f77b4"),
        ("raw_docker_queue_wait_s", "docker-py", "#999999"),
    ):
        values = series[key]
        waits.plot(values, [(i + 1) / len(values) for i in range(len(values))], label=label, color=colour)
    waits.set_xlabel("queue wait (s)")
    waits.set_ylabel("fraction of jobs")
    waits.set_title("queue wait, cumulative")
    waits.legend(loc="lower right")
    fig.tight_layout()
    out = IMAGES / "bench-burst.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_backlog(report: dict[str, Any]) -> Path:
    fig, (rate, memory, reads) = plt.subplots(1, 3, figsize=(12, 3.6))
    marks = sorted(report["submit"], key=lambda key: int(key.split("_")[1]))
    rate.bar([f"{int(key.split('_')[1]):,}" for key in marks], [report["submit"][key] for key in marks])
    rate.set_xlabel("jobs queued")
    rate.set_ylabel("accepted jobs/s")
    rate.set_title("submit rate with a backlog")
    queued = sorted(report["rss_mib_at_queued"], key=int)
    for name, colour in (("submit", "#1f77b4"), ("logs", "#ff7f0e")):
        memory.plot(
            [int(q) for q in queued],
            [report["rss_mib_at_queued"][q][name] for q in queued],
            "o-",
            label=name,
            color=colour,
        )
    memory.set_xlabel("jobs queued")
    memory.set_ylabel("RSS (MiB)")
    memory.set_ylim(bottom=0)
    memory.set_title("memory of each function")
    memory.legend(loc="lower right")
    names = ["page of 50", "filtered", "queue place"]
    keys = ["list_page_of_50", "list_filtered_status_and_name", "queued_job_with_its_place"]
    reads.bar(names, [report[key]["p99_ms"] for key in keys], color="#2ca02c")
    reads.set_ylabel("p99 (ms)")
    reads.set_yscale("log")
    reads.set_title(f"reads with {report['queued_jobs']:,} jobs")
    fig.tight_layout()
    out = IMAGES / "bench-backlog.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def plot_scale(report: dict[str, Any]) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    points = report["drain"]
    ks = [p["dispatchers"] for p in points]
    ax.plot(ks, [p["jobs_per_s"] for p in points], "o-", color="#1f77b4", label="measured (Hades)")
    ax.plot(ks, [m["predicted_jobs_per_s"] for m in report["model"]], "s--", color="#ff7f0e", label="model")
    ax.plot(ks, [k * points[0]["jobs_per_s"] for k in ks], ":", color="#999999", label="linear from 1 dispatcher")
    engine = report["raw_engine"]
    ax.axhline(
        engine["jobs_per_s"], color="#d62728", linestyle="--", label=f"docker-py, {engine['concurrency']} at once"
    )
    ax.set_xticks(ks)
    ax.set_xlabel(f"dispatchers ({points[0]['slots']} slots each)")
    ax.set_ylabel("jobs/s (2 s jobs)")
    ax.set_ylim(bottom=0)
    load = report.get("load_before", ["?"])[0]
    ax.set_title(f"drain rate, one Docker engine, R3 (load avg {load} on 2 cores)", fontsize=9)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    out = IMAGES / "bench-scale.png"
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def main() -> None:
    IMAGES.mkdir(parents=True, exist_ok=True)
    chosen = sys.argv[1:] or ["submit", "burst", "backlog"]
    plotters = {"submit": plot_submit, "burst": plot_burst, "backlog": plot_backlog, "scale": plot_scale}
    for name in chosen:
        report = newest(name)
        if report is None:
            print(f"no results for {name} in {RESULTS}")
            continue
        print(plotters[name](report))


if __name__ == "__main__":
    main()
