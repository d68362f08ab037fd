"""``make run``: nats-server with JetStream (store under .hades/) plus every function, with prefixed logs.

If no Docker engine answers and ``dockerd`` is installed (and we are root), it is started too, logging to
``.hades/dockerd.log``. Ctrl-C (or SIGTERM) stops the functions first, then what else it started; nothing is left
running.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("HADES_LOCAL_STATE_DIR", ROOT / ".hades"))
FUNCTIONS = ("submit", "dispatch", "logs")
COLOURS = {"nats": "36", "submit": "32", "dispatch": "33", "logs": "35"}
DEFAULT_PORTS = {"submit": "8080", "logs": "8081", "dispatch": "8082"}
NATS_PORT = int(os.environ.get("HADES_LOCAL_NATS_PORT", "4222"))


def nats_server() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    found = str(beside) if beside.exists() else shutil.which("nats-server")
    if not found:
        sys.exit("nats-server not found: run `make run` (it installs the dev extra into .venv)")
    return found


def prefix(name: str) -> bytes:
    tag = f"{name:>8} |"
    if sys.stdout.isatty():
        tag = f"\x1b[{COLOURS.get(name, '0')}m{tag}\x1b[0m"
    return (tag + " ").encode()


async def pump(name: str, stream: asyncio.StreamReader) -> None:
    head = prefix(name)
    while line := await stream.readline():
        sys.stdout.buffer.write(head + line)
        sys.stdout.buffer.flush()


async def start(name: str, *argv: str, env: dict[str, str]) -> tuple[asyncio.subprocess.Process, asyncio.Task[None]]:
    process = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, env=env, cwd=ROOT
    )
    assert process.stdout is not None
    return process, asyncio.create_task(pump(name, process.stdout))


async def wait_for_port(port: int, timeout_s: float = 15) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while loop.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            await asyncio.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port} after {timeout_s} s")


async def stop(process: asyncio.subprocess.Process, timeout_s: float = 30) -> None:
    if process.returncode is not None:
        return
    process.terminate()
    try:
        await asyncio.wait_for(process.wait(), timeout_s)
    except TimeoutError:
        process.kill()
        await process.wait()


def engine_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    except Exception:
        return False
    return True


async def start_engine_if_needed(env: dict[str, str]) -> asyncio.subprocess.Process | None:
    """A dockerd of our own when none answers (and we may start one); stopped again at the end."""
    uses_other_engine = env.get("DOCKER_HOST") or env.get("HADES_DOCKER_HOST")
    if uses_other_engine or await asyncio.to_thread(engine_answers):
        return None
    if not shutil.which("dockerd") or os.geteuid() != 0:
        print("hades: no Docker engine answers; jobs wait in the queue until one does", flush=True)
        return None
    print(f"hades: starting dockerd (log: {STATE / 'dockerd.log'})", flush=True)
    with (STATE / "dockerd.log").open("ab") as log_file:
        engine = await asyncio.create_subprocess_exec("dockerd", stdout=log_file, stderr=log_file)
    for _ in range(120):
        if await asyncio.to_thread(engine_answers):
            return engine
        await asyncio.sleep(0.5)
    print("hades: dockerd did not answer within 60 s; jobs wait in the queue", flush=True)
    return engine


async def main() -> int:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.setdefault("HADES_NATS_URL", f"nats://127.0.0.1:{NATS_PORT}")
    # The dashboard's cancel button forwards to the local submit function.
    env.setdefault("HADES_UI_SUBMIT_URL", f"http://127.0.0.1:{env.get('HADES_SUBMIT_PORT', '8080')}")
    # On one's own machine the receiver of a callback (a local Artemis, a test script) is usually on loopback,
    # which callbacks refuse by default; private networks stay refused (docs/security.md).
    env.setdefault("HADES_CALLBACK_ALLOWED_NETWORKS", "127.0.0.0/8,::1/128")
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)

    engine = await start_engine_if_needed(env)
    nats, nats_logs = await start(
        "nats",
        nats_server(),
        "-js",
        "-a",
        "127.0.0.1",
        "-p",
        str(NATS_PORT),
        "-sd",
        str(STATE / "nats"),
        env=env,
    )
    children: list[tuple[asyncio.subprocess.Process, asyncio.Task[None]]] = []
    try:
        await wait_for_port(NATS_PORT)
        for name in FUNCTIONS:
            if (ROOT / "functions" / name / "__main__.py").exists():
                children.append(await start(name, sys.executable, "-m", f"functions.{name}", env=env))
        ports = {name: env.get(f"HADES_{name.upper()}_PORT", default) for name, default in DEFAULT_PORTS.items()}
        urls = "  ".join(f"{name} http://127.0.0.1:{port}" for name, port in ports.items())
        print(f"hades: {urls} — Ctrl-C stops everything", flush=True)
        exits = [asyncio.create_task(p.wait()) for p, _ in [(nats, nats_logs), *children]]
        stop_wait = asyncio.create_task(stopping.wait())
        done, _ = await asyncio.wait([stop_wait, *exits], return_when=asyncio.FIRST_COMPLETED)
        if stop_wait not in done:
            print("hades: a process exited; stopping the rest", flush=True)
        stop_wait.cancel()
        return 0 if stop_wait in done else 1
    finally:
        await asyncio.gather(*(stop(p) for p, _ in children))
        await stop(nats)
        if engine is not None:
            await stop(engine)
        await asyncio.gather(*(task for _, task in [*children, (nats, nats_logs)]), return_exceptions=True)


if __name__ == "__main__":
    STATE.mkdir(exist_ok=True)
    sys.exit(asyncio.run(main()))
