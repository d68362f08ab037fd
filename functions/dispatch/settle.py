"""The end of one delivery: from the attempt's ``Outcome`` to the one ack, nak or term of its message.

Every answer to a job message is decided here, in ``settle`` (``_verdict`` picks it, ``_answer`` sends it), from
a typed outcome, never from an executor's wording:

- the job ended (``finished``): its terminal event is stored after every earlier event, then the message is
  acked and what the run made is removed (``RunResult.release``); a terminal event that cannot be stored hands the
  message back (nak) and removes nothing, so its redelivery adopts the finished run: never acked without a stored
  end, never run twice for want of one;
- infrastructure trouble (``retry``): nak with a delay for another attempt, or on the last attempt (``max_deliver``)
  the job fails for good and is copied to the dead letters (``gave_up``);
- a redelivery of a job that already ended (``already_ended``): ack, nothing runs twice; one whose end cannot be
  told (``undecided``): nak with a delay;
- a dispatcher stopping (``handed_back``): nak, redelivered at once; a message that is no job (``malformed``): term.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from dataclasses import dataclass, field
from enum import Enum, auto
from typing import Any

from functions.dispatch.executors.base import Cause, Executor, RunResult, StepResult
from functions.dispatch.ownership import Leases
from functions.dispatch.reporter import Reporter
from functions.dispatch.results import attach
from runtime import metrics, subjects
from runtime.errors import HadesError, Unavailable
from runtime.jobs import JobStatus, StepStatus, utc_now
from runtime.messaging import Delivery, Messaging
from runtime.settings import Settings

log = logging.getLogger(__name__)

RETRY_DELAY_S = 5.0
"""How long a job waits before its next attempt after infrastructure trouble."""


@dataclass
class Deps:
    """What every delivery of one dispatcher shares."""

    conn: Messaging
    executor: Executor
    settings: Settings
    dispatcher_id: str
    host: str = field(default_factory=socket.gethostname)  # with the pid: a restarted dispatcher on this host
    pid: int = field(default_factory=os.getpid)  # can tell the process that took a job is gone
    leases: Leases = field(default_factory=lambda: Leases(None))
    """Who owns each running job (the KV bucket, opened when the dispatcher starts)."""


class Kind(Enum):
    FINISHED = auto()  # the run ended with a result
    RETRY = auto()  # infrastructure trouble: try again later
    GAVE_UP = auto()  # no attempt left: fail for good, dead-letter
    ALREADY_ENDED = auto()  # a redelivery of a job with a stored end
    UNDECIDED = auto()  # whether it ended cannot be told now
    HANDED_BACK = auto()  # the dispatcher stops: another one runs it
    SUPERSEDED = auto()  # a later attempt owns the job (this one was paused past AckWait): stand down
    MALFORMED = auto()  # not a job message


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to: a typed result with a typed cause (``result.cause``), not wording."""

    kind: Kind
    result: RunResult | None = None
    detail: str = ""
    """For ``RETRY`` and ``GAVE_UP``: what went wrong, in words for the job's reason."""

    @classmethod
    def finished(cls, result: RunResult) -> Outcome:
        return cls(Kind.FINISHED, result=result)

    @classmethod
    def retry(cls, detail: str) -> Outcome:
        return cls(Kind.RETRY, detail=detail)

    @classmethod
    def gave_up(cls, detail: str) -> Outcome:
        return cls(Kind.GAVE_UP, detail=detail)


class Verdict(Enum):
    ACK = auto()
    NAK_LATER = auto()  # after RETRY_DELAY_S
    NAK_NOW = auto()
    TERM = auto()
    NONE = auto()  # superseded: the message is the new owner's to answer


async def settle(deps: Deps | None, msg: Delivery, outcome: Outcome, *, run: Reporter | None = None) -> None:
    """Make the delivery's one decision and send it; an attempt another one took over sends nothing."""
    verdict = await _verdict(deps, msg, outcome, run)
    if run is not None and not await run.owned():
        verdict = Verdict.NONE
    if verdict is Verdict.NONE and run is not None:
        log.warning("job %s attempt %d: superseded by a later attempt; left to it", run.job.id, run.attempt)
    await _answer(msg, verdict)
    if verdict is Verdict.ACK and outcome.result is not None:
        await _release(outcome.result)


async def hand_back(msg: Delivery) -> None:
    """A message this dispatcher took but will not run (it is stopping)."""
    await settle(None, msg, Outcome(Kind.HANDED_BACK))


async def _verdict(deps: Deps | None, msg: Delivery, outcome: Outcome, run: Reporter | None) -> Verdict:
    if outcome.kind is Kind.SUPERSEDED:
        return Verdict.NONE
    if outcome.kind is Kind.MALFORMED:
        return Verdict.TERM
    if outcome.kind is Kind.ALREADY_ENDED:
        return Verdict.ACK
    if outcome.kind is Kind.UNDECIDED:
        return Verdict.NAK_LATER
    if outcome.kind is Kind.HANDED_BACK or deps is None or run is None:
        return Verdict.NAK_NOW
    if outcome.kind is Kind.RETRY:
        if run.attempt >= deps.settings.dispatch.max_deliver:
            return await _verdict(
                deps, msg, Outcome.gave_up(f"infrastructure trouble on the last attempt: {outcome.detail}"), run
            )
        await _retrying(run, outcome.detail)
        return Verdict.NAK_LATER
    if outcome.kind is Kind.GAVE_UP:
        await _dead_letter(deps, msg, run, outcome.detail)
        result = RunResult(JobStatus.FAILED, (), reason=f"infrastructure: {outcome.detail}", cause=Cause.INFRASTRUCTURE)
        return await _finished(run, result)
    assert outcome.result is not None
    return await _finished(run, outcome.result)


async def _answer(msg: Delivery, verdict: Verdict) -> None:
    """The one place a job message is answered."""
    if verdict is Verdict.NONE:
        return
    if verdict is Verdict.ACK:
        await msg.ack()  # a lost ack is seen by the redelivery, which finds the stored end
        return
    with contextlib.suppress(Unavailable):  # if even the nak is lost, AckWait brings the job back
        if verdict is Verdict.TERM:
            await msg.term()
        elif verdict is Verdict.NAK_LATER:
            await msg.nak(delay_s=RETRY_DELAY_S)
        else:
            await msg.nak()


async def _finished(run: Reporter, result: RunResult) -> Verdict:
    """Store the terminal event after every earlier one; ACK once it is stored, else hand the job back."""
    await run.report_unreported(result)
    await run.sink.close()  # every line stored before the terminal event, so readers of the end see them all
    logs: dict[str, Any] = {"log_lost_lines": run.sink.lost_lines} if run.sink.lost_lines else {}  # record says so
    if run.sink.truncated:  # cut by dispatch's cap (HADES_JOB_LOG_MAX_BYTES), which may be below the logs' own
        logs["log_truncated"] = True
    kept = attach.terminal_fields(run.results)  # the test summary and kept files, when collected
    terminal = run.event(result.status, reason=result.reason, finished_at=utc_now(), **logs, **kept)
    try:
        await run.statuses.publish_last(terminal)  # every earlier status event first: the terminal one is the last
    except Unavailable as exc:
        log.error(
            "job %s: its %s (or a status event before it) could not be stored (%s); handing it back",
            run.job.id,
            result.status,
            exc.detail,
        )
        return Verdict.NAK_LATER
    run.ended(result, failure_reason(result))
    reason = terminal.get("reason")
    log.info("job %s attempt %d: %s%s", run.job.id, run.attempt, result.status, f" ({reason})" if reason else "")
    return Verdict.ACK


async def _release(result: RunResult) -> None:
    """Remove what the run made, now that its end is stored (never before: a job handed back with its end unstored
    is adopted by its redelivery, not run again). Shielded in the executor; a failure never fails the settle."""
    if result.release is None:
        return
    try:
        await result.release()
    except Exception:  # the leftover sweep (or a redelivery) removes it later
        log.exception("removing what a job made failed")


async def _retrying(run: Reporter, detail: str) -> None:
    event = run.event(JobStatus.RUNNING, reason=f"retrying: {detail}")
    safe = event.get("reason", "")
    log.warning("job %s attempt %d: %s; retrying in %.0f s", run.job.id, run.attempt, safe, RETRY_DELAY_S)
    run.system(0, f"[hades] attempt {run.attempt} hit infrastructure trouble ({detail}); retrying")
    await run.statuses.publish(event)
    if run.statuses.unsent:  # the next attempt's events supersede them in the record
        log.warning(
            "job %s attempt %d: %d status events never stored", run.job.id, run.attempt, len(run.statuses.unsent)
        )


async def _dead_letter(deps: Deps, msg: Delivery, run: Reporter, detail: str) -> None:
    """Keep the job's message where it can be listed and redriven."""
    metrics.DEAD_LETTERED.inc()
    reason = run.event(JobStatus.FAILED, reason=detail).get("reason", "")  # masked, never published
    # Best effort, both: whatever is down, the job still gets its terminal status.
    try:  # an earlier attempt may have died with its dispatcher and left containers running; this job is over
        await deps.executor.cleanup(run.job.id)
    except HadesError as exc:
        log.warning("job %s: leftovers not removed: %s", run.job.id, exc.detail)
    try:
        await deps.conn.publish(subjects.dead_subject(run.job.id), msg.data, headers={"Hades-Reason": reason[:500]})
    except HadesError as exc:
        log.warning("job %s: not copied to the dead letters: %s", run.job.id, exc.detail)


_LABEL_OF_CAUSE: dict[Cause, metrics.Reason] = {
    Cause.STEP_FAILED: metrics.Reason.FAILED,
    Cause.REFUSED: metrics.Reason.FAILED,
    Cause.OUT_OF_MEMORY: metrics.Reason.OOM,
    Cause.IMAGE_UNAVAILABLE: metrics.Reason.IMAGE_PULL,
    Cause.UNSCHEDULABLE: metrics.Reason.UNSCHEDULABLE,
    Cause.INFRASTRUCTURE: metrics.Reason.INFRASTRUCTURE,
    Cause.TIMED_OUT: metrics.Reason.TIMED_OUT,
    Cause.CANCELLED: metrics.Reason.CANCELLED,
}


def failure_reason(result: RunResult) -> metrics.Reason:
    """The bounded reason label of a finished job, from its status and typed cause (never its wording)."""
    if result.status is JobStatus.SUCCEEDED:
        return metrics.Reason.SUCCEEDED
    if result.status is JobStatus.TIMED_OUT:
        return metrics.Reason.TIMED_OUT
    if result.status is JobStatus.CANCELLED:
        return metrics.Reason.CANCELLED
    cause = result.cause or _failing_step_cause(result.steps)
    return _LABEL_OF_CAUSE.get(cause, metrics.Reason.FAILED) if cause else metrics.Reason.FAILED


def _failing_step_cause(steps: tuple[StepResult, ...]) -> Cause | None:
    return next((s.cause for s in steps if s.status is StepStatus.FAILED and s.cause), None)
