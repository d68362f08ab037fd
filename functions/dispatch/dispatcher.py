"""The dispatch loop: take jobs from the lanes by weight, run up to ``concurrency`` at once, stop in two phases.

Which lane next: among lanes with waiting jobs (their consumers' ``num_pending``), smooth weighted round-robin
(6:3:1 by default), so high goes first and low never starves. Which tenant's job in that lane: fair share
(``shares``). An idle dispatcher sleeps until a core-NATS subscription on the job subjects says something arrived
(or ``pull_timeout_s`` passes, for redeliveries).
Cancel requests arrive on ``hades.cancel.*`` and reach the running job's ``StopSignal``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from functions.dispatch import jobrun, ownership, settle
from functions.dispatch.executors.base import Executor, StopSignal
from functions.dispatch.shares import SNAPSHOT_TTL_S, Shares
from runtime import eventlog, events, messaging, metrics, subjects, tasks
from runtime.errors import HadesError, Unavailable
from runtime.jobs import JobStatus
from runtime.messaging import Delivery, Subscription, topology
from runtime.settings import Settings
from runtime.subjects import Lane

log = logging.getLogger(__name__)


class LanePicker:
    """Smooth weighted round-robin (as nginx does it) over the lanes that have work."""

    def __init__(self, weights: Sequence[int]) -> None:
        self.weights = dict(zip(subjects.LANES, weights, strict=True))
        self.current = dict.fromkeys(subjects.LANES, 0)

    def order(self, ready: Sequence[Lane]) -> list[Lane]:
        """Lanes to try, best first: the weighted pick, then the rest by priority."""
        if not ready:
            return []
        total = sum(self.weights[lane] for lane in ready)
        for lane in ready:
            self.current[lane] += self.weights[lane]
        best = max(ready, key=lambda lane: self.current[lane])
        self.current[best] -= total
        return [best, *(lane for lane in subjects.LANES if lane in ready and lane != best)]


class Dispatcher:
    def __init__(self, conn: messaging.Messaging, executor: Executor, settings: Settings) -> None:
        self.conn = conn
        self.executor = executor
        self.settings = settings
        self.id = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.deps = settle.Deps(conn=conn, executor=executor, settings=settings, dispatcher_id=self.id)
        self.picker = LanePicker(settings.dispatch.lane_weights)
        self.slots = asyncio.Semaphore(settings.dispatch.concurrency)
        self.running: dict[str, tuple[asyncio.Task[None], StopSignal, Delivery]] = {}
        self.stops: dict[str, StopSignal] = {}  # every taken job, registered before its cancel check
        self.work_hint = asyncio.Event()
        self.shares = Shares(conn, settings)
        self.redelivery_looked_at = float("-inf")
        self.redelivery_turn = -1
        self.loop_task: asyncio.Task[None] | None = None
        self.stopping = False
        self.hint_subscription: Subscription | None = None
        self.cancel_subscription: Subscription | None = None
        metrics.DISPATCH_FREE_SLOTS.set(settings.dispatch.concurrency)
        for kind in ("unavailable", "job"):  # exported at zero from the start, so rate() sees the first error
            metrics.EXECUTOR_ERRORS.labels(executor.name, kind)

    async def start(self) -> None:
        self.deps.leases = ownership.Leases(await self.conn.bucket(topology.leases_bucket_config(self.settings)))
        await self.shares.start()
        self.hint_subscription = await self.conn.subscribe(subjects.JOBS_WAKE_SUBJECT, self._on_job_published)
        self.cancel_subscription = await self.conn.subscribe(f"{subjects.CANCEL_SUBJECT_PREFIX}.*", self._on_cancel)
        await self.sweep_leftovers()
        self.loop_task = asyncio.create_task(self._loop(), name="dispatch-loop")
        log.info(
            "dispatcher %s: %d slots, lanes weighted %s, executor %s",
            self.id,
            self.settings.dispatch.concurrency,
            ":".join(map(str, self.settings.dispatch.lane_weights)),
            self.executor.name,
        )

    async def _on_job_published(self, subject: str, data: bytes) -> None:
        self.shares.job_published()
        self.work_hint.set()

    async def _on_cancel(self, subject: str, data: bytes) -> None:
        job_id = subjects.job_id_of(subject)
        stop = self.stops.get(job_id)
        if stop is not None:
            log.info("job %s: cancel requested, stopping it", job_id)
            stop.stop(JobStatus.CANCELLED, grace_s=self.settings.dispatch.cancel_grace_s, reason="cancelled")
        elif self.executor.capabilities.host_local and not self.stopping:
            # Not ours: if its dispatcher died on this host, nobody else would stop its containers until AckWait.
            try:
                await self._recover(job_id, cancelled=True)
            except HadesError as exc:
                log.warning("job %s: its cancel could not reach its containers: %s", job_id, exc.detail)

    async def sweep_leftovers(self) -> None:
        """Remove what ended jobs left behind (a dispatcher that crashed mid-job). A job that is still queued or
        running keeps its resources: whoever runs it next cleans them up (or follows its running step). A job
        still running for a dispatcher of this host that is gone is handed back at once (``_hand_back``)."""
        try:
            leftovers = await self.executor.leftovers()
        except Exception as exc:
            log.warning("could not list leftovers: %s", exc)
            return
        for job_id in leftovers - set(self.running):
            try:
                last = await eventlog.latest_status(self.conn, job_id)
                if last is None or events.is_terminal(last):
                    log.info("removing leftovers of ended job %s", job_id)
                    await self.executor.cleanup(job_id)
                elif self.executor.capabilities.host_local:
                    await self._recover(job_id, cancelled=await self._cancel_requested(job_id))
            except HadesError as exc:  # one stuck leftover must not keep the dispatcher from starting
                log.warning("leftovers of job %s not removed: %s", job_id, exc.detail)

    async def _recover(self, job_id: str, *, cancelled: bool) -> None:
        """Hand back the delivery of a job whose latest attempt runs for a dispatcher of this host that no longer
        exists: it is redelivered now (and its running step followed, or the job settled), not after AckWait. A job
        cancelled meanwhile has its containers removed first, at once. Only for an executor whose containers run on
        the dispatcher's host (Docker): a Kubernetes dispatcher's pod is another host, and its jobs come back after
        AckWait. Who runs it, and its delivery, are in the job's lease (``ownership``)."""
        holder = await self.deps.leases.holder(job_id)
        if holder is None or holder.host != socket.gethostname():
            return
        if not holder.pid or _dispatcher_alive(holder.pid):
            return
        if cancelled:
            log.info(
                "job %s: cancelled while its dispatcher %s is gone; removing its containers", job_id, holder.dispatcher
            )
            await self.executor.cleanup(job_id)
        if holder.delivery:
            log.info("job %s: its dispatcher %s is gone; handing its delivery back", job_id, holder.dispatcher)
            await self.conn.nak_delivery(holder.delivery)

    async def _next_message(self) -> Delivery:
        idle_s = self.settings.dispatch.pull_timeout_s
        while not self.stopping:
            self.work_hint.clear()
            try:
                await self.shares.refresh()
                ready = self.shares.ready_lanes()
                if ready and (msg := await self._redelivery_due()) is not None:
                    return msg
                for lane in self.picker.order(ready):
                    if (msg := await self._take_from(lane)) is not None:
                        return msg
                if not ready:  # nothing new waits: a job whose holder died comes back as a redelivery
                    for scope in self.shares.held_only():
                        if (msg := await self.shares.take_redelivery(scope, timeout_s=0.02)) is not None:
                            return msg
            except Unavailable as exc:
                log.warning("taking a job failed: %s", exc.detail)
                await asyncio.sleep(1)
                continue
            if not ready:
                wait_s = min(idle_s, SNAPSHOT_TTL_S) if self.shares.held_back() else idle_s
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self.work_hint.wait(), wait_s)
        raise asyncio.CancelledError

    async def _redelivery_due(self) -> Delivery | None:
        """While jobs wait, one consumer that only holds deliveries is still looked at per ``pull_timeout_s``, in
        turn: a job handed back or whose holder died would otherwise wait for every queued job of the lane."""
        now = time.monotonic()
        if now - self.redelivery_looked_at < self.settings.dispatch.pull_timeout_s:
            return None
        self.redelivery_looked_at = now
        held = self.shares.held_only()
        if not held:
            return None
        self.redelivery_turn = (self.redelivery_turn + 1) % len(held)
        return await self.shares.take_redelivery(held[self.redelivery_turn], timeout_s=0.02)

    async def _take_from(self, lane: Lane) -> Delivery | None:
        """A job of ``lane``, from the tenant fair share names; the next one when that tenant's queue was empty."""
        passed: frozenset[str] = frozenset()
        while (tenant := self.shares.choose(lane, passed)) is not None:
            if (msg := await self.shares.take((lane, tenant), timeout_s=0.5)) is not None:
                return msg
            passed |= {tenant}
        return None

    async def _loop(self) -> None:
        while not self.stopping:
            await self.slots.acquire()
            metrics.DISPATCH_FREE_SLOTS.dec()
            try:
                msg = await self._next_message()
            except BaseException:
                self._release()
                raise
            if self.stopping:  # taken as the stop came: hand it straight back
                self._release()
                await settle.hand_back(msg)
                return
            await self._start(msg)

    def _release(self) -> None:
        self.slots.release()
        metrics.DISPATCH_FREE_SLOTS.inc()

    async def _start(self, msg: Delivery) -> None:
        job_id = msg.headers.get(subjects.HEADER_MSG_ID, "")
        if job_id in self.running:
            # Redelivered while this process still runs it (its in-progress acks were lost for longer than
            # AckWait): never run a job twice at once. The running attempt acks it when it ends; left unacked,
            # this delivery comes back only if that run dies, and then finds the job ended or runs it.
            log.warning("job %s: redelivered while it still runs here; keeping the running attempt", job_id)
            self._release()
            return
        stop = self.stops[job_id] = StopSignal()  # before the check: a cancel arriving meanwhile is not lost
        try:
            cancelled = bool(job_id) and await eventlog.cancel_requested(self.conn, job_id)
        except Unavailable as exc:
            # A job cancelled while queued already reads "cancelled": taking "no request" for an answer would run
            # it behind that record. Undecided, so it comes back later (as a redelivery whose end is unreadable).
            log.warning("job %s: whether it was cancelled cannot be read (%s); later", job_id, exc.detail)
            if self.stops.get(job_id) is stop:
                del self.stops[job_id]
            self._release()
            await settle.settle(None, msg, settle.Outcome(settle.Kind.UNDECIDED))
            return
        if cancelled:
            stop.stop(JobStatus.CANCELLED, grace_s=0, reason="cancelled before it started")
        task = asyncio.create_task(jobrun.handle(self.deps, msg, stop=stop), name=f"job-{job_id}")
        self.running[job_id] = (task, stop, msg)
        metrics.JOBS_RUNNING.inc()
        task.add_done_callback(lambda t: self._finished(job_id, t, stop, msg.subject))

    async def _cancel_requested(self, job_id: str) -> bool:
        try:
            return await eventlog.cancel_requested(self.conn, job_id)
        except Unavailable:
            return False

    def _finished(self, job_id: str, task: asyncio.Task[None], stop: StopSignal, subject: str) -> None:
        # Only this delivery's entries: after a long outage the same job may be running again as a later attempt.
        if self.running.get(job_id, (None,))[0] is task:
            del self.running[job_id]
        if self.stops.get(job_id) is stop:
            del self.stops[job_id]
        metrics.JOBS_RUNNING.dec()
        self.shares.finished(subject)
        self.work_hint.set()  # a capped tenant may start its next job now
        self._release()
        if not task.cancelled() and task.exception() is not None:
            log.error("job %s: dispatch failed; it will be redelivered", job_id, exc_info=task.exception())

    def stop_taking(self) -> None:
        """Take no new job from here on (a message fetched meanwhile is handed straight back); running ones go on."""
        self.stopping = True
        self.work_hint.set()

    async def stop(self) -> None:
        """Phase 1: stop taking jobs, let running ones finish within the grace. Phase 2: stop the rest and leave
        their messages for another dispatcher (nak: redelivered at once, not after AckWait)."""
        self.stop_taking()
        if self.loop_task is not None:
            await tasks.cancel_and_wait(self.loop_task)
        # Pull subscriptions too: a fetch answered after its timeout leaves a message in a queue nobody reads,
        # and draining the connection would wait for it. Unacked, it is redelivered after AckWait. The cancel
        # subscription stays until the running jobs are done: a cancel during the grace still stops its job.
        await _close([self.hint_subscription] if self.hint_subscription else [])
        await self.shares.close()
        running = [task for task, _, _ in self.running.values()]
        if running:
            grace_s = self.settings.dispatch.shutdown_grace_s
            log.info("waiting up to %.0f s for %d running jobs", grace_s, len(running))
            _, pending = await asyncio.wait(running, timeout=grace_s)
            handed_back = [(job_id, task, msg) for job_id, (task, _, msg) in self.running.items() if task in pending]
            for job_id, task, _ in handed_back:  # all at once: each one's cleanup takes its own time
                log.warning("job %s: still running at shutdown; handing it back to the queue", job_id)
                task.cancel()
            await asyncio.gather(*(task for _, task, _ in handed_back), return_exceptions=True)
            for _, _, msg in handed_back:
                await settle.hand_back(msg)
        await _close([self.cancel_subscription] if self.cancel_subscription else [])


def _dispatcher_alive(pid: int) -> bool:
    """Whether ``pid`` (on this host) may still be a dispatcher. Only a pid that is gone, or reused by a process
    that is not ``functions.dispatch``, counts as dead; this process, or anything unreadable, counts as alive."""
    if pid == os.getpid() or not Path("/proc/self").exists():  # another dispatcher in this process (tests)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, as another user
        pass
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except FileNotFoundError:
        return False  # gone since
    except OSError:
        return True
    return b"functions.dispatch" in cmdline  # empty for a zombie


async def _close(subscriptions: Sequence[Subscription]) -> None:
    for subscription in subscriptions:
        await subscription.close()
