"""Following a job in the terminal: step headers, live lines, a progress line, and the result as an exit code.

On a terminal the progress line (status, step k of n, elapsed time, the place in the queue while queued) stays
at the bottom, below the lines as they come, and texts have colours; anywhere else (a pipe, a CI log) the same
lines are written plain, without the progress line and without any escape code of ours. The job's own lines are
untrusted: on a terminal they keep their colours and nothing else, elsewhere they are written exactly as served
(``hades_client.terminal``).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import datetime
from enum import IntEnum

from rich.ansi import AnsiDecoder
from rich.console import Console, RenderableType
from rich.live import Live
from rich.spinner import Spinner
from rich.text import Text

from hades_client import terminal
from hades_client.asyncclient import AsyncHadesClient
from hades_client.errors import HadesClientError
from hades_client.models import EndEvent, Job, JobStatus, LineEvent, StatusEvent, StepStatus

QUEUE_POLL_S = 1.0
"""How often the place in the queue is asked for while a followed job waits (terminal only)."""

SYSTEM_STEP = 0
"""Hades' own lines (pulling an image, a truncated log) come as step 0."""


class ExitCode(IntEnum):
    SUCCEEDED = 0
    FAILED = 1
    TIMED_OUT = 2
    CANCELLED = 3
    NOT_DONE = 4
    """Could not submit, or any other request failed: bad arguments, invalid job, no server, an error answer."""


EXIT_CODES = {
    JobStatus.SUCCEEDED: ExitCode.SUCCEEDED,
    JobStatus.FAILED: ExitCode.FAILED,
    JobStatus.TIMED_OUT: ExitCode.TIMED_OUT,
    JobStatus.CANCELLED: ExitCode.CANCELLED,
}

STATUS_STYLES = {
    "succeeded": "green",
    "failed": "red",
    "timed_out": "red",
    "cancelled": "yellow",
    "skipped": "dim",
    "running": "cyan",
    "queued": "blue",
}


PIPE_WIDTH = 10_000
"""Columns assumed when the output is not a terminal: tables are never cropped for a script reading them."""


def make_console(*, stderr: bool = False) -> Console:
    """Log text is printed as it is: no markup, no emoji codes, no highlighting, no wrapping."""
    console = Console(stderr=stderr, markup=False, emoji=False, highlight=False, soft_wrap=True)
    if not console.is_terminal:
        console.width = PIPE_WIDTH
    return console


def _parse_time(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text).timestamp()
    except ValueError:
        return None


def format_elapsed(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02}:{secs:02}" if hours else f"{minutes}:{secs:02}"


@dataclass
class Progress:
    """What the progress line shows; updated from the stream and, while queued, from the job record."""

    job_id: str
    status: str = str(JobStatus.QUEUED)
    step_ids: list[int] = field(default_factory=list)
    step_names: dict[int, str] = field(default_factory=dict)
    current_step: int | None = None
    step_from_stream: bool = False
    """True once the stream named the running step: from then on only the stream moves ``current_step``."""
    queue_position: int | None = None
    lane: str | None = None
    since: float = field(default_factory=time.time)
    """Wall-clock start of the phase shown: submitted while queued, started while running."""

    def update_from(self, job: Job) -> None:
        """Fill in from the record. The record may lag behind the stream (the collector writes it after the event
        the stream already showed): a current step the stream named is kept."""
        self.status = str(job.status)
        self.lane = job.lane
        self.queue_position = job.queue_position
        for step in job.steps:
            if step.id not in self.step_ids:
                self.step_ids.append(step.id)
            if step.name:
                self.step_names[step.id] = step.name
            if step.status is StepStatus.RUNNING and not self.step_from_stream:
                self.current_step = step.id
        self.step_ids.sort()
        started = _parse_time(job.started_at if job.status is JobStatus.RUNNING else job.submitted_at)
        if started is not None:
            self.since = started

    def step_position(self, step_id: int) -> str:
        if step_id in self.step_ids:
            return f"step {self.step_ids.index(step_id) + 1} of {len(self.step_ids)}"
        return f"step {step_id}"

    def step_label(self, step_id: int) -> str:
        where = self.step_position(step_id)
        name = self.step_names.get(step_id)
        return f"{where}: {terminal.label(name)}" if name else where

    def line(self) -> str:
        parts = [self.status]
        if self.status == JobStatus.QUEUED:
            if self.queue_position is not None:
                parts.append(f"position {self.queue_position}" + (f" in lane {self.lane}" if self.lane else ""))
        elif self.current_step is not None:
            parts.append(self.step_label(self.current_step))
        parts.append(format_elapsed(time.time() - self.since))
        return " · ".join(parts)


class Follower:
    """Prints one job's stream; ``run`` returns its final status."""

    def __init__(
        self,
        client: AsyncHadesClient,
        job_id: str,
        *,
        console: Console,
        show_lines: bool = True,
        step: int | None = None,
    ) -> None:
        self.client = client
        self.job_id = job_id
        self.console = console
        self.show_lines = show_lines
        self.step = step
        self.progress = Progress(job_id)
        self._decoders: dict[tuple[int | None, str | None], AnsiDecoder] = {}  # a colour lasts per step and stream
        self._headed: set[int] = set()
        self._ended: set[int] = set()
        """Steps whose final status came: a late line of theirs does not make them current again."""

    async def run(self) -> EndEvent:
        self.progress.update_from(await self.client.get(self.job_id))
        if not self.console.is_terminal:
            return await self._consume()
        live = Live(
            console=self.console,
            get_renderable=self._progress_line,
            transient=True,
            refresh_per_second=4,
            redirect_stdout=False,
            redirect_stderr=False,
        )
        poller = asyncio.create_task(self._poll_queue_position())
        try:
            with live:
                return await self._consume()
        finally:
            poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await poller

    def _progress_line(self) -> RenderableType:
        return Spinner("dots", Text(self.progress.line(), style="bold"), style="cyan")

    async def _poll_queue_position(self) -> None:
        while True:
            await asyncio.sleep(QUEUE_POLL_S)
            if self.progress.status != JobStatus.QUEUED:
                return
            with contextlib.suppress(HadesClientError):
                job = await self.client.get(self.job_id)
                if self.progress.status == JobStatus.QUEUED:  # the stream may have moved on meanwhile
                    self.progress.update_from(job)

    async def _consume(self) -> EndEvent:
        async for event in self.client.stream(self.job_id):
            if isinstance(event, LineEvent):
                self._line(event)
            elif isinstance(event, StatusEvent):
                await self._status(event)
            else:
                self.progress.status = str(event.status)
                self._end(event)
                return event
        raise AssertionError("the stream ends with its end event")  # pragma: no cover

    def _shows(self, step_id: int | None) -> bool:
        return self.step is None or step_id == self.step

    def _line(self, event: LineEvent) -> None:
        if event.step is not None and event.step != SYSTEM_STEP:
            # A step's first lines can reach the stream just before its "running" event does.
            self._step_started(event.step)
            if event.step not in self._ended:
                self._now_running(event.step)  # the step that prints is the one running
        if not self.show_lines or not self._shows(event.step):
            return
        decoder = self._decoders.setdefault((event.step, event.output_stream), AnsiDecoder())
        if event.step == SYSTEM_STEP:
            terminal.write_job_output(self.console, "hades: " + event.message + "\n", style="dim", decoder=decoder)
        else:
            style = "yellow" if event.output_stream == "stderr" else ""
            terminal.write_job_output(self.console, event.message + "\n", style=style, decoder=decoder)

    async def _status(self, event: StatusEvent) -> None:
        if event.kind == "job":
            self.progress.status = event.status
            if event.status == JobStatus.RUNNING:
                self.progress.since = _parse_time(event.raw.get("started_at") or event.raw.get("at")) or time.time()
            return
        if event.step_id is None:
            return
        if event.step_name and event.step_id not in self.progress.step_names:
            self.progress.step_names[event.step_id] = event.step_name
        if event.step_id not in self.progress.step_ids:  # a step the record did not list yet: ask again
            with contextlib.suppress(HadesClientError):
                self.progress.update_from(await self.client.get(self.job_id))
        if event.status == StepStatus.RUNNING:
            self._step_started(event.step_id)
            self._now_running(event.step_id)
        elif StepStatus(event.status).terminal:
            self._ended.add(event.step_id)
            if self.show_lines and self._shows(event.step_id):
                self._step_result(event)

    def _now_running(self, step_id: int) -> None:
        self.progress.current_step = step_id
        self.progress.step_from_stream = True

    def _step_started(self, step_id: int) -> None:
        """The step's header, once, whether its running event or one of its lines comes first."""
        if step_id in self._headed:
            return
        self._headed.add(step_id)
        self._now_running(step_id)
        if self.show_lines and self._shows(step_id):
            self.console.print(Text(f"==> {self.progress.step_label(step_id)}", style="bold cyan"))

    def _step_result(self, event: StatusEvent) -> None:
        details = []
        if event.exit_code is not None:
            details.append(f"exit {event.exit_code}")
        duration = event.raw.get("duration_s")
        if isinstance(duration, int | float):
            details.append(f"{duration:.1f} s")
        if event.reason:
            details.append(terminal.label(event.reason))
        suffix = f" ({', '.join(details)})" if details else ""
        assert event.step_id is not None
        text = f"<== {self.progress.step_position(event.step_id)} {event.status}{suffix}"
        self.console.print(Text(text, style=STATUS_STYLES.get(event.status, "")))

    def _end(self, event: EndEvent) -> None:
        reason = f": {terminal.label(event.reason)}" if event.reason else ""
        text = f"job {self.job_id} {event.status}{reason}"
        self.console.print(Text(text, style="bold " + STATUS_STYLES.get(str(event.status), "")))
