"""Submit throughput: wrk (64 connections) against one submit process, vs a raw nats-py JetStream publish loop.

Both publish the same job document to the same stream configuration on the same nats-server, the baseline with 64
publishes in flight. Target: ≥ 3,000 accepted jobs/s, ≥ 20 % of the baseline, p99 ≤ 30 ms.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import ROOT, function, machine, nats_server

CONNECTIONS = 64
DURATION_S = 10
PAYLOAD = (ROOT / "schemas" / "examples" / "valid" / "hello.json").read_text()

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = [==[%s]==]
local codes = {}
response = function(status, headers, body) codes[status] = (codes[status] or 0) + 1 end
done = function(summary, latency, requests)
  io.write(string.format("P99_US %%d\\n", latency:percentile(99)))
  io.write(string.format("P50_US %%d\\n", latency:percentile(50)))
end
"""


async def raw_publish_baseline(url: str, seconds: float) -> float:
    """Jobs/s of a bare JetStream publish loop: 64 in flight, same payload, same stream."""
    import nats

    from runtime import messaging, subjects
    from runtime.settings import Settings

    settings = Settings.from_env({"HADES_NATS_URL": url})
    conn = await messaging.connect(settings, name="bench-baseline")  # creates the streams as submit does
    nc = await nats.connect(url)
    js = nc.jetstream()
    await js.purge_stream(subjects.JOBS_STREAM)
    payload = PAYLOAD.encode()
    count = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal count
        while time.perf_counter() < deadline:
            await js.publish("hades.jobs.high", payload, headers={"Nats-Msg-Id": str(uuid.uuid4())})
            count += 1

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
    elapsed = time.perf_counter() - start
    await js.purge_stream(subjects.JOBS_STREAM)
    await nc.close()
    await conn.close()
    return count / elapsed


def run_wrk(port: int) -> dict[str, Any]:
    if not shutil.which("wrk"):
        raise SystemExit("wrk not found: apt-get install wrk")
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(WRK_SCRIPT % PAYLOAD)
    out = subprocess.run(
        ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{DURATION_S}s", "-s", script.name, f"http://127.0.0.1:{port}/jobs"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    Path(script.name).unlink()
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "requests": requests,
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "socket_errors": errors.group(1) if errors else "",
        "p50_ms": int(re.search(r"P50_US (\d+)", out).group(1)) / 1000,  # type: ignore[union-attr]
        "p99_ms": int(re.search(r"P99_US (\d+)", out).group(1)) / 1000,  # type: ignore[union-attr]
    }


async def count_stored(url: str) -> int:
    import nats

    nc = await nats.connect(url)
    info = await nc.jetstream().stream_info("HADES_JOBS")
    await nc.close()
    return int(info.state.messages)


def main() -> dict[str, Any]:
    with nats_server() as server:
        baseline = asyncio.run(raw_publish_baseline(server.url, DURATION_S))
        with function("submit", {"HADES_NATS_URL": server.url}, "HADES_SUBMIT_PORT") as port:
            result = run_wrk(port)
        stored = asyncio.run(count_stored(server.url))
    accepted_per_s = result["requests_per_s"] * (1 - result["non_2xx"] / max(result["requests"], 1))
    report = {
        "benchmark": "submit",
        "machine": machine(),
        "connections": CONNECTIONS,
        "duration_s": DURATION_S,
        "baseline_raw_publish_per_s": round(baseline),
        "submit_accepted_per_s": round(accepted_per_s),
        "ratio_to_baseline": round(accepted_per_s / baseline, 3),
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "non_2xx": result["non_2xx"],
        "jobs_stored": stored,
    }
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    main()
