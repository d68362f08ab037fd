"""The one door to the API server: plain JSON requests through the official client's auth, TLS and connection pool.

Owns: loading the cluster config (``KUBECONFIG`` or the in-cluster account), a client-side rate limit shared by
every request of this dispatcher (QPS with a burst), retries with backoff on 429 and 5xx (``Retry-After`` honoured)
and on connection errors, bounded request times, and translating the rest into ``Unavailable`` or an ``ApiError``
the caller decides about (404, 409, 422 …). Every request blocks, so all of them run on this door's own thread
pool; long streams (the watch, log follows) use the same pool, which is sized for them.

The typed API classes are skipped on purpose: objects stay dicts from and to the wire (no model round trip per
watch event), and the few endpoints used are spelled out here.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

import kubernetes.client
import kubernetes.config
import urllib3.exceptions

from runtime import metrics
from runtime.errors import Unavailable, truncate

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

CONNECT_TIMEOUT_S = 5.0
REQUEST_TIMEOUT_S = 30.0
"""One short request (create, get, list, delete); past it the API server counts as unavailable."""
RETRIES = 4
"""Tries of one request on 429, 5xx or a connection error (0.5, 1, 2 s apart unless ``Retry-After`` says more)."""
MAX_RETRY_AFTER_S = 10.0

JOBS = "/apis/batch/v1/namespaces/{namespace}/jobs"
JOB = "/apis/batch/v1/namespaces/{namespace}/jobs/{name}"
PODS = "/api/v1/namespaces/{namespace}/pods"
POD = "/api/v1/namespaces/{namespace}/pods/{name}"
POD_LOG = "/api/v1/namespaces/{namespace}/pods/{name}/log"

NETWORK_ERRORS = (urllib3.exceptions.HTTPError, OSError)
READ_TIMEOUTS = (urllib3.exceptions.ReadTimeoutError, TimeoutError)
"""Of the network errors: a stream that stayed silent past its read timeout (it worked, it was only quiet)."""


class ApiError(Exception):
    """An answer the caller has to judge (not 429/5xx): ``status`` and the API server's ``Status`` reason."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status, self.reason, self.message = status, reason, truncate(message)


class RateLimiter:
    """A token bucket shared by the loop and the stream threads: ``reserve`` says how long to wait for a token."""

    def __init__(self, qps: float, burst: int) -> None:
        self.qps, self.burst = qps, burst
        self._tokens = float(burst)
        self._at = time.monotonic()
        self._lock = threading.Lock()

    def reserve(self) -> float:
        with self._lock:
            now = time.monotonic()
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.qps)
            self._at = now
            self._tokens -= 1
            return 0.0 if self._tokens >= 0 else -self._tokens / self.qps


class Api:
    def __init__(self, client: Any, *, pool: ThreadPoolExecutor, limiter: RateLimiter, namespace: str) -> None:
        self.client = client
        self.pool = pool
        self.limiter = limiter
        self.namespace = namespace
        self.requests = 0
        """Requests sent (retries included); the benchmark reports it per job."""

    @classmethod
    async def connect(cls, *, namespace: str, qps: float, burst: int, threads: int) -> Api:
        pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="hades-k8s")
        try:
            client = await asyncio.get_running_loop().run_in_executor(pool, _client, threads)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        return cls(client, pool=pool, limiter=RateLimiter(qps, burst), namespace=namespace)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.blocking(self.client.close)
        self.pool.shutdown(wait=False, cancel_futures=True)

    async def blocking(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.pool, functools.partial(fn, *args, **kwargs))

    # -- short requests, on the loop's side ---------------------------------------------------------------------

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, Any]] = (),
        body: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> dict[str, Any]:
        """One JSON request, rate-limited and retried; the decoded answer."""
        delay_s = 0.5
        for attempt in range(1, RETRIES + 1):
            await asyncio.sleep(self.limiter.reserve())
            try:
                send = functools.partial(self.send, method, path, query=query, body=body, name=name)
                return await self.blocking(send)
            except Retry as exc:
                if attempt == RETRIES:
                    raise Unavailable(f"kubernetes API: {exc.detail}") from None
                wait_s = min(max(delay_s, exc.retry_after_s), MAX_RETRY_AFTER_S)
                log.debug("%s %s: %s; retrying in %.1f s", method, path, exc.detail, wait_s)
                await asyncio.sleep(wait_s)
                delay_s *= 2
        raise AssertionError("unreachable")

    # -- on the pool's threads ----------------------------------------------------------------------------------

    def send(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, Any]] = (),
        body: Mapping[str, Any] | None = None,
        timeout_s: float = REQUEST_TIMEOUT_S,
        name: str | None = None,
    ) -> dict[str, Any]:
        response = self.open(method, path, query=query, body=body, timeout_s=timeout_s, name=name)
        try:
            data = response.read()
        except NETWORK_ERRORS as exc:
            raise Retry(f"{method} {path}: {exc.__class__.__name__}: {exc}") from exc
        finally:
            response.release_conn()
        decoded: dict[str, Any] = json.loads(data) if data else {}
        return decoded

    def open(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, Any]] = (),
        body: Mapping[str, Any] | None = None,
        timeout_s: float = REQUEST_TIMEOUT_S,
        name: str | None = None,
    ) -> Any:
        """Send a request, return the urllib3 response unread (2xx), or raise ``ApiError`` / ``Retry``."""
        self.requests += 1
        metrics.K8S_API_REQUESTS.labels(method).inc()
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        params = {"namespace": self.namespace} if name is None else {"namespace": self.namespace, "name": name}
        try:
            method, url, headers, serialized, _ = self.client.param_serialize(
                method,
                path,
                path_params=params,
                query_params=list(query),
                header_params=headers,
                body=dict(body) if body is not None else None,
                auth_settings=["BearerToken"],
            )
            answer = self.client.call_api(
                method, url, header_params=headers, body=serialized, _request_timeout=(CONNECT_TIMEOUT_S, timeout_s)
            )
        except NETWORK_ERRORS as exc:
            raise Retry(f"{method} {path}: {exc.__class__.__name__}: {exc}") from exc
        response = answer.response
        if 200 <= response.status < 300:
            return response
        try:
            raw = response.read()
        except NETWORK_ERRORS:
            raw = b""
        finally:
            response.release_conn()
        reason, message = _status_of(raw, response.status)
        if response.status == 429 or response.status >= 500:
            raise Retry(f"{response.status} {reason}: {message}", retry_after_s=_retry_after(response))
        raise ApiError(response.status, reason, message)

    def wait_token(self) -> None:
        """The rate limit for a stream thread (it may sleep: it is not the loop)."""
        time.sleep(self.limiter.reserve())


class Retry(Exception):
    """Temporary trouble (429, 5xx, network): ``request`` retries it; a stream thread handles its own."""

    def __init__(self, detail: str, *, retry_after_s: float = 0.0) -> None:
        super().__init__(detail)
        self.detail, self.retry_after_s = truncate(detail), retry_after_s


def lines(response: Any) -> Iterator[bytes]:
    """A streamed answer split into lines as chunks arrive (the watch, a followed log)."""
    buffer = b""
    for chunk in response.stream(None, decode_content=False):
        buffer += chunk
        *complete, buffer = buffer.split(b"\n")
        yield from complete
    if buffer:
        yield buffer


def close_quietly(response: Any) -> None:
    """Ends a stream another thread is blocked on (its read fails and that thread sees the end)."""
    try:
        response.shutdown() if hasattr(response, "shutdown") else None
        response.close()
        response.release_conn()
    except Exception as exc:
        log.debug("closing a stream: %s", exc)


def _client(threads: int) -> Any:
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_kube_config(client_configuration=configuration)  # type: ignore[no-untyped-call] # KUBECONFIG or ~/.kube/config
    except (kubernetes.config.ConfigException, OSError, TypeError) as kube_config_error:
        try:
            kubernetes.config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        except kubernetes.config.ConfigException as exc:
            raise Unavailable(
                f"kubernetes: no cluster configured (KUBECONFIG: {kube_config_error}; in-cluster: {exc})"
            ) from None
    configuration.connection_pool_maxsize = threads  # one connection per thread: no "pool is full" churn
    configuration.retries = 0  # ours, rate-limited, instead of urllib3's
    return kubernetes.client.ApiClient(configuration)


def _status_of(raw: bytes, status: int) -> tuple[str, str]:
    try:
        body = json.loads(raw)
        return str(body.get("reason") or status), str(body.get("message") or "")
    except (ValueError, AttributeError):
        return str(status), truncate(raw.decode(errors="replace"))


def _retry_after(response: Any) -> float:
    try:
        return float(response.headers.get("Retry-After") or 0)
    except (TypeError, ValueError):
        return 0.0
