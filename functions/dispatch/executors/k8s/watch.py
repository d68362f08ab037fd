"""One pod watch per dispatcher: every job's pod changes from a single label-selected stream.

A thread lists this deployment's pods once, then watches from that list's ``resourceVersion``, resuming from the
last version it saw when the server ends a watch window, and lists again when the version is too old (410 Gone).
Each change is handed to the event loop, where ``on_pod`` routes it to the job that follows that pod. So API load
is one long request per dispatcher plus a re-list now and then, however many jobs run. After a re-list,
``on_relist`` gets the names of the pods that exist, so a follower notices a pod deleted while nobody watched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from functions.dispatch.executors.k8s import api as k8s_api

log = logging.getLogger(__name__)

WINDOW_S = 240
"""One watch request's ``timeoutSeconds``: the server ends it then and it is resumed from the last version."""
MAX_BACKOFF_S = 30.0

OnPod = Callable[[str, dict[str, Any]], None]
OnRelist = Callable[[set[str]], None]


class PodWatch:
    def __init__(
        self, api: k8s_api.Api, *, selector: str, loop: asyncio.AbstractEventLoop, on_pod: OnPod, on_relist: OnRelist
    ) -> None:
        self._api = api
        self._selector = selector
        self._loop = loop
        self._on_pod = on_pod
        self._on_relist = on_relist
        self._stopped = threading.Event()
        self._response: Any = None
        self._future: asyncio.Future[None] | None = None
        self.failing_since: float | None = None
        """Monotonic time since which the watch could not be (re)opened; None while it works."""
        self.last_error = ""

    def start(self) -> None:
        self._future = self._loop.run_in_executor(self._api.pool, self._run)

    async def stop(self) -> None:
        self._stopped.set()
        if self._response is not None:
            k8s_api.close_quietly(self._response)
        if self._future is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._future), 5)

    # -- on the watch thread ------------------------------------------------------------------------------------

    def _run(self) -> None:
        version: str | None = None
        backoff_s = 0.5
        while not self._stopped.is_set():
            try:
                if version is None:
                    version = self._list()
                version = self._watch(version)
                backoff_s = 0.5
                self.failing_since = None
            except _Gone:
                log.info("pod watch: version too old; listing again")
                version = None
            except (k8s_api.ApiError, k8s_api.Retry, ValueError) as exc:
                if self._stopped.is_set():
                    return
                if isinstance(exc, k8s_api.ApiError) and exc.status == 410:
                    version = None
                    continue
                self.last_error = str(exc)
                self.failing_since = self.failing_since or time.monotonic()
                log.warning("pod watch: %s; again in %.1f s", exc, backoff_s)
                self._stopped.wait(backoff_s)
                backoff_s = min(backoff_s * 2, MAX_BACKOFF_S)

    def _list(self) -> str:
        self._api.wait_token()
        answer = self._api.send("GET", k8s_api.PODS, query=[("labelSelector", self._selector)])
        names = set()
        for pod in answer.get("items") or []:
            names.add(pod["metadata"]["name"])
            self._deliver("ADDED", pod)
        self._call(self._on_relist, names)
        return str(answer["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> str:
        """Follow changes from ``version`` until the server ends the window; the last version seen."""
        self._api.wait_token()
        query = [
            ("labelSelector", self._selector),
            ("watch", "true"),
            ("resourceVersion", version),
            ("allowWatchBookmarks", "true"),
            ("timeoutSeconds", WINDOW_S),
        ]
        response = self._api.open("GET", k8s_api.PODS, query=query, timeout_s=WINDOW_S + 30)
        self._response = response
        try:
            for line in k8s_api.lines(response):
                if self._stopped.is_set():
                    break
                if not line.strip():
                    continue
                event = json.loads(line)
                kind, obj = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise _Gone()
                    raise k8s_api.ApiError(int(obj.get("code") or 500), str(obj.get("reason")), str(obj.get("message")))
                version = str(obj.get("metadata", {}).get("resourceVersion") or version)
                if kind in ("ADDED", "MODIFIED", "DELETED"):
                    self._deliver(kind, obj)
        except k8s_api.NETWORK_ERRORS as exc:
            if not self._stopped.is_set():
                log.debug("pod watch ended: %s", exc)
        finally:
            self._response = None
            k8s_api.close_quietly(response)
        return version

    def _deliver(self, kind: str, pod: dict[str, Any]) -> None:
        self._call(self._on_pod, kind, pod)

    def _call(self, fn: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: the executor is going away
            self._loop.call_soon_threadsafe(fn, *args)


class _Gone(Exception):
    pass
