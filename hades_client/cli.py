"""The ``hades`` command: submit, follow, inspect and cancel jobs; validate job files offline; run Hades locally.

Exit codes follow the job where a command waits for one (``--follow``, ``--wait``): 0 succeeded, 1 failed,
2 timed out, 3 cancelled; 4 when the command could not do its request (bad arguments, an invalid job, no server,
an error answer). ``validate`` exits 1 when a file is invalid.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from hades_client import errors, protocol, terminal, validation
from hades_client.asyncclient import AsyncHadesClient
from hades_client.client import HadesClient
from hades_client.follow import EXIT_CODES, STATUS_STYLES, ExitCode, Follower, make_console
from hades_client.models import Job
from hades_client.protocol import Endpoints

CHECKOUT = Path(__file__).resolve().parent.parent
"""The Hades checkout this package runs from (``hades up`` needs its ``tools/``)."""
RUN_LOCAL = CHECKOUT / "tools" / "run_local.py"
INSTALL_DOCKER = CHECKOUT / "tools" / "install_docker.sh"
INTERRUPTED = 130


class HadesGroup(click.Group):
    """Maps every failure to an exit code of our own: click's 2 for a usage error would read as "timed out"."""

    def main(self, *args: Any, **kwargs: Any) -> Any:
        kwargs["standalone_mode"] = False
        try:
            result = super().main(*args, **kwargs)
        except click.ClickException as exc:
            exc.show()
            sys.exit(ExitCode.NOT_DONE)
        except click.Abort:
            sys.exit(INTERRUPTED)
        sys.exit(int(result) if isinstance(result, int) else 0)


def _endpoints(ctx: click.Context) -> Endpoints:
    endpoints = ctx.find_object(Endpoints)
    assert endpoints is not None
    return endpoints


def _fail(message: str, *, code: int = ExitCode.NOT_DONE) -> int:
    make_console(stderr=True).print(Text(f"hades: {message}", style="red"))
    return code


def _report(exc: errors.HadesClientError) -> int:
    """An error as the user needs it: the server's title and detail, then every refused field."""
    console = make_console(stderr=True)
    console.print(Text(f"hades: {exc}", style="red"))
    if isinstance(exc, errors.ApiError):
        for violation in exc.errors:
            console.print(Text(f"  {violation['path']}: {violation['message']}"))
        if exc.retry_after_s is not None:
            console.print(Text(f"  the server asks to retry after {exc.retry_after_s:.0f} s"))
    return ExitCode.NOT_DONE


def _requests(function: Callable[..., int]) -> Callable[..., int]:
    """Client errors become a message and exit code 4; Ctrl-C while waiting leaves the job alone."""

    def wrapper(*args: Any, **kwargs: Any) -> int:
        try:
            return function(*args, **kwargs)
        except errors.HadesClientError as exc:
            return _report(exc)
        except KeyboardInterrupt:
            make_console(stderr=True).print("hades: interrupted; the job goes on (hades cancel ID stops it)")
            return INTERRUPTED

    wrapper.__name__ = function.__name__
    wrapper.__doc__ = function.__doc__
    return wrapper


def _client(ctx: click.Context) -> HadesClient:
    e = _endpoints(ctx)
    return HadesClient(e.url, e.logs_url, api_key=e.api_key, logs_api_key=e.logs_api_key)


def _async_client(ctx: click.Context) -> AsyncHadesClient:
    e = _endpoints(ctx)
    return AsyncHadesClient(e.url, e.logs_url, api_key=e.api_key, logs_api_key=e.logs_api_key)


def _follow(ctx: click.Context, job_id: str, *, show_lines: bool, step: int | None = None) -> int:
    async def run() -> int:
        async with _async_client(ctx) as client:
            follower = Follower(client, job_id, console=make_console(), show_lines=show_lines, step=step)
            end = await follower.run()
        return EXIT_CODES[end.status]

    return asyncio.run(run())


def _log_warnings(job: Job) -> list[str]:
    """What the record says is missing from the log (of the current attempt)."""
    warnings = []
    if job.log_incomplete:
        lost = f"{job.log_lost_lines} lines" if job.log_lost_lines != 1 else "1 line"
        what = lost if job.log_lost_lines else "some lines"
        warnings.append(f"the log is incomplete: {what} could not be stored (NATS was unreachable too long)")
    if job.log_truncated:
        warnings.append("the log is truncated: the job wrote more than the server keeps")
    return warnings


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@click.group(cls=HadesGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--url",
    envvar="HADES_URL",
    default=protocol.DEFAULT_URL,
    show_default=True,
    show_envvar=True,
    help="The submit service.",
)
@click.option(
    "--logs-url",
    envvar="HADES_LOGS_URL",
    default=protocol.DEFAULT_LOGS_URL,
    show_default=True,
    show_envvar=True,
    help="The logs service.",
)
@click.option("--api-key", envvar="HADES_API_KEY", show_envvar=True, help="Key for submit and cancel (Bearer).")
@click.option(
    "--logs-api-key",
    envvar="HADES_LOGS_API_KEY",
    show_envvar=True,
    help="Key for reading jobs and logs, when it differs from --api-key.",
)
@click.pass_context
def main(ctx: click.Context, url: str, logs_url: str, api_key: str | None, logs_api_key: str | None) -> None:
    """Submit jobs to Hades, follow them live, and read their status and logs."""
    ctx.obj = Endpoints(url, logs_url, api_key or None, logs_api_key or None)


@main.command()
@click.argument("job_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("-f", "--follow", is_flag=True, help="Show steps and lines live; exit with the job's result.")
@click.option("-w", "--wait", is_flag=True, help="Wait for the end without the lines; exit with the job's result.")
@click.option("-p", "--priority", type=click.IntRange(-1000, 1000), help="Overrides the file's priority.")
@click.option("--tenant", help="Charges the job to this tenant (a key that names one decides it anyway).")
@click.option("--idempotency-key", help="Submitting again with the same key returns the same job.")
@click.option("--json", "as_json", is_flag=True, help="Print the server's answer as JSON.")
@click.pass_context
@_requests
def submit(
    ctx: click.Context,
    job_file: Path,
    follow: bool,
    wait: bool,
    priority: int | None,
    tenant: str | None,
    idempotency_key: str | None,
    as_json: bool,
) -> int:
    """Submit the job in JOB_FILE and print its id."""
    try:
        document = validation.load_job(job_file)
    except validation.UnreadableJob as exc:
        return _fail(str(exc))
    overrides = {"priority": priority, "tenant": tenant}
    if any(value is not None for value in overrides.values()) and not isinstance(document, dict):
        return _fail(f"{job_file}: a job is a JSON object")
    for name, value in overrides.items():
        if value is not None:
            document[name] = value
    with _client(ctx) as client:
        submitted = client.submit(document, idempotency_key=idempotency_key)
    if as_json:
        _print_json(submitted.raw)
    elif follow or wait:
        lane = f" on lane {submitted.lane}" if submitted.lane else ""
        make_console(stderr=True).print(f"job {submitted.id} {submitted.status}{lane}")
    else:
        click.echo(submitted.id)
    if not (follow or wait):
        return ExitCode.SUCCEEDED
    return _follow(ctx, submitted.id, show_lines=follow)


@main.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the whole record as JSON.")
@click.pass_context
@_requests
def status(ctx: click.Context, job_id: str, as_json: bool) -> int:
    """Show a job's status and its steps."""
    with _client(ctx) as client:
        job = client.get(job_id)
    if as_json:
        _print_json(job.raw)
        return ExitCode.SUCCEEDED
    console = make_console()
    head = Text(f"{job.id}  {terminal.label(job.name or '')}  ")
    head.append(str(job.status), style=STATUS_STYLES.get(str(job.status), ""))
    console.print(head)
    facts = [f"lane {job.lane}" if job.lane else None, f"priority {job.priority}" if job.priority is not None else None]
    if job.tenant:
        facts.append(f"tenant {terminal.label(job.tenant)}")
    if job.queue_position is not None:
        facts.append(f"position {job.queue_position} in the queue{_own_ahead(job)}")
    if job.attempt > 1:
        facts.append(f"attempt {job.attempt}")
    if job.reason:
        facts.append(f"reason: {terminal.label(job.reason)}")
    console.print("  " + ", ".join(f for f in facts if f))
    for warning in _log_warnings(job):
        console.print(Text(f"  warning: {warning}", style="bold yellow"))
    table = Table(box=None, pad_edge=False, show_edge=False)
    for column in ("step", "name", "image", "status", "exit", "time"):
        table.add_column(column)
    for step in job.steps:
        table.add_row(
            str(step.id),
            terminal.label(step.name or ""),
            terminal.label(step.image or ""),
            Text(str(step.status), style=STATUS_STYLES.get(str(step.status), "")),
            "" if step.exit_code is None else str(step.exit_code),
            "" if step.duration_s is None else f"{step.duration_s:.1f} s",
        )
    console.print(table)
    if job.results is not None:
        _print_results(console, job.results)
    return ExitCode.SUCCEEDED


def _own_ahead(job: Job) -> str:
    """Under fair share, how many of the jobs ahead in its lane are its own tenant's (when others' are too)."""
    queue = job.raw.get("queue")
    own = queue.get("tenant_position") if isinstance(queue, dict) else None
    if not isinstance(own, int) or own == job.queue_position or not job.tenant:
        return ""
    return f" ({own} of them {terminal.label(job.tenant)}'s)"


def _print_results(console: Any, results: dict[str, Any]) -> None:
    """The test summary, the failed cases and the kept files of a job that asked for them."""
    tests = results.get("tests")
    if isinstance(tests, dict):
        bad = int(tests.get("failures") or 0) + int(tests.get("errors") or 0)
        line = Text("  tests: ")
        line.append(
            f"{tests.get('tests', 0)} run, {tests.get('passed', 0)} passed, {tests.get('failures', 0)} failed, "
            f"{tests.get('errors', 0)} errors, {tests.get('skipped', 0)} skipped ({tests.get('time_s', 0)} s)",
            style="red" if bad else "green",
        )
        console.print(line)
        for case in results.get("failed_tests") or []:
            where = ".".join(p for p in (case.get("classname"), case.get("name")) if p)
            message = str(case.get("message") or "").splitlines()[0:1]
            line = Text(f"    {case.get('kind', 'failure')}: {terminal.label(where)}", style="red")
            if message:
                line.append(f"  {terminal.label(message[0])}")
            console.print(line)
        dropped = int(results.get("failed_tests_dropped") or 0)
        if dropped:
            console.print(f"    … and {dropped} more")
    for report in results.get("reports") or []:
        if not report.get("parsed"):
            console.print(
                Text(f"  report {terminal.label(str(report.get('path')))}: {report.get('reason')}", style="yellow")
            )
    kept = results.get("artifacts") or []
    if kept:
        size = sum(int(a.get("size") or 0) for a in kept)
        console.print(f"  artifacts: {len(kept)} files, {size} bytes (hades artifacts list ID)")
    for skipped in results.get("skipped") or []:
        console.print(
            Text(f"  not kept: {terminal.label(str(skipped.get('path')))}: {skipped.get('reason')}", style="yellow")
        )
    for warning in results.get("warnings") or []:
        console.print(Text(f"  warning: {terminal.label(str(warning))}", style="yellow"))


@main.group()
def artifacts() -> None:
    """List and download the files a job kept (its ``artifacts`` and reports)."""


@artifacts.command(name="list")
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True, help="Print the answer as JSON.")
@click.pass_context
@_requests
def artifacts_list(ctx: click.Context, job_id: str, as_json: bool) -> int:
    """List the files a job kept."""
    with _client(ctx) as client:
        answer = client.artifacts(job_id)
    if as_json:
        _print_json(answer)
        return ExitCode.SUCCEEDED
    console = make_console()
    table = Table(box=None, pad_edge=False, show_edge=False)
    for column in ("name", "size", "type", "kind", "sha256"):
        table.add_column(column)
    for item in answer.get("artifacts") or []:
        table.add_row(
            terminal.label(str(item.get("name"))),
            str(item.get("size")),
            str(item.get("content_type")),
            str(item.get("kind")),
            str(item.get("sha256"))[:16],
        )
    console.print(table)
    for skipped in answer.get("skipped") or []:
        console.print(
            Text(f"not kept: {terminal.label(str(skipped.get('path')))}: {skipped.get('reason')}", style="yellow")
        )
    return ExitCode.SUCCEEDED


@artifacts.command(name="get")
@click.argument("job_id")
@click.argument("name")
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="Write here (default: NAME's file name)."
)
@click.pass_context
@_requests
def artifacts_get(ctx: click.Context, job_id: str, name: str, output: Path | None) -> int:
    """Download one kept file (``-o -`` writes it to stdout)."""
    with _client(ctx) as client:
        if output is not None and str(output) == "-":
            client.download_artifact(job_id, name, sys.stdout.buffer)
            sys.stdout.buffer.flush()
            return ExitCode.SUCCEEDED
        target = output or Path(Path(name).name)
        partial = target.with_name(target.name + ".part")
        try:
            with partial.open("wb") as sink:
                written = client.download_artifact(job_id, name, sink)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(target)
    make_console(stderr=True).print(f"{target}: {written} bytes")
    return ExitCode.SUCCEEDED


@main.command()
@click.argument("job_id")
@click.option("-f", "--follow", is_flag=True, help="Keep showing lines live; exit with the job's result.")
@click.option("--step", type=click.IntRange(min=0), help="Only this step's lines.")
@click.pass_context
@_requests
def logs(ctx: click.Context, job_id: str, follow: bool, step: int | None) -> int:
    """Print a job's log (all of it so far, or live with --follow).

    On a terminal the job's colours show and any other escape sequence or control character is shown as text
    (ESC as ^[); in a pipe or a file the log is written exactly as served.
    """
    if follow:
        return _follow(ctx, job_id, show_lines=True, step=step)
    with _client(ctx) as client:
        text = client.logs_text(job_id, step=step)
    terminal.write_job_output(make_console(), text)
    return ExitCode.SUCCEEDED


@main.command(name="list")
@click.option("--status", "status_filter", help="Only jobs with this status (queued, running, failed, … or a list).")
@click.option("--name", help="Only jobs whose name contains this text.")
@click.option("--tenant", help="Only this tenant's jobs (a course, a team).")
@click.option("-n", "--limit", type=click.IntRange(min=1), default=20, show_default=True, help="At most this many.")
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
@click.pass_context
@_requests
def list_command(
    ctx: click.Context, status_filter: str | None, name: str | None, tenant: str | None, limit: int, as_json: bool
) -> int:
    """List jobs, newest first."""
    found: list[Job] = []
    with _client(ctx) as client:
        # The server filters; a filtered page may be short, so page on until there are enough.
        pages = client.iter_jobs(
            status=status_filter, name=name, tenant=tenant, page_size=min(limit, protocol.MAX_PAGE_SIZE)
        )
        for job in pages:
            found.append(job)
            if len(found) >= limit:
                break
    if as_json:
        _print_json([job.raw for job in found])
        return ExitCode.SUCCEEDED
    table = Table(box=None, pad_edge=False, show_edge=False)
    table.add_column("id", no_wrap=True, min_width=36)
    for column in ("name", "status", "lane", "tenant", "submitted", "steps"):
        table.add_column(column)
    for job in found:
        done = sum(1 for step in job.steps if step.status.terminal)
        table.add_row(
            job.id,
            terminal.label(job.name or ""),
            Text(str(job.status), style=STATUS_STYLES.get(str(job.status), "")),
            job.lane or "",
            terminal.label(job.tenant or ""),
            job.submitted_at or "",
            f"{done}/{len(job.steps)}",
        )
    make_console().print(table)
    return ExitCode.SUCCEEDED


@main.command()
@click.argument("job_id")
@click.pass_context
@_requests
def cancel(ctx: click.Context, job_id: str) -> int:
    """Cancel a job: a queued one is dropped, a running one stopped."""
    with _client(ctx) as client:
        answer = client.cancel(job_id)
    click.echo(f"job {answer.id} {answer.status}")
    return ExitCode.SUCCEEDED


@main.command()
@click.argument("job_files", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print {file: [violations]} as JSON.")
def validate(job_files: tuple[Path, ...], as_json: bool) -> int:
    """Check job files offline against the job schema, with the server's messages (exit 1 if one is invalid)."""
    results: dict[str, list[errors.Violation]] = {}
    for path in job_files:
        try:
            document = validation.load_job(path)
        except validation.UnreadableJob as exc:
            return _fail(str(exc))
        results[str(path)] = validation.job_violations(document)
    if as_json:
        _print_json(results)
    else:
        console = make_console()
        for name, violations in results.items():
            if not violations:
                console.print(Text(f"{name}: valid", style="green"))
                continue
            console.print(Text(f"{name}: invalid", style="red"))
            for violation in violations:
                console.print(Text(f"  {violation['path']}: {violation['message']}"))
    return ExitCode.FAILED if any(results.values()) else ExitCode.SUCCEEDED


@main.command()
def up() -> int:
    """Run Hades locally, as `make run`: nats-server and every function; Ctrl-C stops all."""
    if not RUN_LOCAL.is_file():
        return _fail(f"hades up runs tools/run_local.py of a Hades checkout, and {CHECKOUT} has none")
    if INSTALL_DOCKER.is_file():
        subprocess.run(["bash", str(INSTALL_DOCKER)], cwd=CHECKOUT, check=False)
    os.chdir(CHECKOUT)
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, str(RUN_LOCAL)])
    return ExitCode.NOT_DONE  # pragma: no cover - execv does not return
