"""Settings: every knob of every function, read once from the environment.

This module is the only reader of ``os.environ`` (``OTEL_*`` belongs to the OpenTelemetry SDK). Each field has a
default that works for ``make run``; ``Settings.from_env`` parses everything at start-up and fails fast, naming
the variable. ``ENV_VARS`` maps every variable to its field so the README table can be checked against it.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from runtime import tenants, units

T = TypeVar("T")


class SettingsError(ValueError):
    """A variable could not be parsed; the message names it."""


@dataclass(frozen=True)
class NatsSettings:
    url: str = "nats://127.0.0.1:4222"
    """NATS server URL(s), comma-separated for a cluster."""
    connect_timeout_s: float = 2.0
    """How long one connection attempt may take."""
    publish_timeout_s: float = 5.0
    """How long a JetStream publish waits for its ack before the caller is told ``Unavailable``."""
    replicas: int = 1
    """Stream replicas: 1 for a single server, 3 for a production cluster."""
    duplicate_window_s: float = 600.0
    """How long a job id or ``Idempotency-Key`` is remembered for de-duplication (≥ 10 minutes)."""
    events_max_age_s: float = 7 * 24 * 3600.0
    """How long status and log events (and so job records and logs) are kept."""
    events_max_bytes: int = -1
    """Size cap of the events stream in bytes; -1 means no cap (age alone bounds it)."""


@dataclass(frozen=True)
class HttpSettings:
    host: str = "0.0.0.0"
    """Address every function listens on."""
    submit_port: int = 8080
    logs_port: int = 8081
    dispatch_port: int = 8082
    api_key: str = field(default="", repr=False)
    """When set, submit (and cancel) need HTTP Basic ``hades:<key>`` or ``Bearer <key>``; empty: no auth."""
    max_payload_bytes: int = 1024 * 1024
    """Largest accepted job document (413 above)."""
    shutdown_timeout_s: float = 10.0
    """How long open HTTP requests may take to finish on SIGTERM."""
    body_read_timeout_s: float = 30.0
    """How long a client may take to send a request body (408 after): a body that never ends holds no socket."""
    header_read_timeout_s: float = 10.0
    """How long a client may take to send a request's headers (or its first byte on a new connection) before the
    connection is closed: header bytes trickled slowly (slowloris) hold no socket. 0 turns it off."""


@dataclass(frozen=True)
class LimitSettings:
    """Operator defaults and maxima for job resources; a request above a maximum is a 422."""

    default_cpu: float = 1.0
    max_cpu: float = 4.0
    default_memory_bytes: int = 1024**3
    max_memory_bytes: int = 8 * 1024**3
    default_pids: int = 1024
    max_pids: int = 4096
    default_timeout_s: int = 3600
    max_timeout_s: int = 3600
    allowed_networks: tuple[str, ...] = ("none",)
    """Networks a step may ask for; ``none`` (no interface but loopback) is the default for every step."""
    allowed_images: tuple[str, ...] = ()
    """Globs a step image must match (``registry.example/*``, ``docker.io/library/*``); a match also opens a
    registry on a private address. Empty: any image except those naming a registry on a loopback, link-local or
    private address (or ``localhost``), which the daemon would otherwise contact on a submitter's word."""


@dataclass(frozen=True)
class DispatchSettings:
    executor: str = "docker"
    """Which executor runs the steps: ``docker`` (one engine) or ``kubernetes`` (one batch/v1 Job per job)."""
    concurrency: int = 4
    """Jobs one dispatcher runs at once."""
    lane_weights: tuple[int, int, int] = (6, 3, 1)
    """How often the high, normal and low lanes are served when all have work."""
    ack_wait_s: float = 30.0
    """JetStream AckWait: a dead dispatcher's job is redelivered this long after its last in-progress ack."""
    max_deliver: int = 3
    """Deliveries before a job is failed and dead-lettered (bounds infrastructure retries)."""
    shutdown_grace_s: float = 20.0
    """On SIGTERM, how long running jobs may finish before they are left for redelivery."""
    cancel_grace_s: float = 10.0
    """Between SIGTERM and SIGKILL when a running step is cancelled."""
    pull_timeout_s: float = 1.0
    """Longest idle wait before the lanes are polled again (new jobs wake a dispatcher at once)."""
    image_pull_timeout_s: float = 300.0
    """Longest an image pull may take before the job fails as infrastructure trouble."""
    log_flush_interval_s: float = 0.2
    """Log lines are published at least this often while a step writes."""
    log_batch_lines: int = 500
    """...or as soon as this many lines are waiting."""
    log_line_max_bytes: int = 16 * 1024
    """Longer lines are split."""
    job_log_max_bytes: int = 10 * 1024 * 1024
    """Per-job log cap; past it a truncation marker is written and further output dropped."""
    secret_patterns: tuple[str, ...] = (
        "*TOKEN*",
        "*SECRET*",
        "*PASSWORD*",
        "*PASSWD*",
        "*CREDENTIAL*",
        "*PRIVATE_KEY*",
        "*API_KEY*",
        "*APIKEY*",
        "*ACCESS_KEY*",
        "*SSH_KEY*",
    )
    """Metadata keys matching these (case-insensitive globs) have their values masked as ``***`` in logs. They name
    secrets; a bare ``*KEY*`` would also mask ordinary values such as Artemis' ``PLAN_KEY`` or a map's ``KEY``."""
    secret_keys: tuple[str, ...] = ()
    """Exact metadata keys (case-insensitive) whose values are masked too, for secrets no pattern names."""
    secret_min_chars: int = 6
    """Shorter values of secret keys are not masked: masking ``1``, ``true`` or ``main`` everywhere in the output
    would garble it and protect nothing."""
    step_user: str = ""
    """``uid[:gid]`` every step runs as; empty: the image's own user (often root). Set it (e.g. ``65534:65534``)
    in production: /shared is then made writable for that user (see docs/security.md)."""
    step_read_only_root: bool = False
    """Mount each step's root file system read-only, with a writable tmpfs ``/tmp``; images that write elsewhere
    outside /shared fail then, so it is off by default."""
    shared_max_bytes: int = 0
    """Size limit of a job's /shared; 0: none (a disk volume). Set, /shared is a tmpfs of that size (Docker) or
    an ``emptyDir`` with that ``sizeLimit`` (Kubernetes); a tmpfs counts against the writing step's memory."""
    scope: str = "hades"
    """Label value that marks this deployment's containers, so dispatchers of another deployment sharing the
    engine never sweep them as leftovers."""

    def is_secret(self, key: str) -> bool:
        upper = key.upper()
        if upper in (name.upper() for name in self.secret_keys):
            return True
        return any(fnmatch.fnmatchcase(upper, pattern.upper()) for pattern in self.secret_patterns)


@dataclass(frozen=True)
class DockerSettings:
    """The Docker executor's own knobs."""

    host: str = ""
    """Docker engine URL; empty: the usual ``DOCKER_HOST`` / local socket."""


@dataclass(frozen=True)
class KubernetesSettings:
    """The Kubernetes executor's own knobs (cluster access: ``KUBECONFIG`` or the in-cluster account)."""

    namespace: str = "default"
    """Namespace the Jobs are created in."""
    image_pull_policy: str = "IfNotPresent"
    """``imagePullPolicy`` of every step container."""
    qps: float = 20.0
    """Client-side rate limit: API requests per second one dispatcher makes (watches and log streams count once,
    when opened), so a burst of jobs cannot flood the API server."""
    burst: int = 40
    """Requests the rate limit lets through at once before it holds callers to ``qps``."""
    ttl_after_finished_s: int = 600
    """``ttlSecondsAfterFinished``: dispatch deletes a Job once it has read its results; the cluster removes one
    it could not (dispatcher gone for good) this long after it finished."""
    unschedulable_timeout_s: float = 300.0
    """How long a job's pod may stay unschedulable (no node fits its requests) before the job fails with the
    scheduler's message."""
    image_pull_timeout_s: float = 120.0
    """How long a step's image may stay in ``ErrImagePull``/``ImagePullBackOff`` before the job fails (the
    kubelet retries pulls with backoff, so a registry hiccup shorter than this costs nothing)."""
    request_fraction: float = 0.1
    """Requests are this fraction of the step's limits (cpu and memory), so the scheduler packs pods by typical
    use rather than worst case; 1 gives every pod the ``Guaranteed`` QoS class."""
    node_selector: tuple[tuple[str, str], ...] = ()
    """``nodeSelector`` of job pods, from ``key=value,key=value``."""
    tolerations: tuple[dict[str, Any], ...] = ()
    """``tolerations`` of job pods, from a JSON list of toleration objects."""
    service_account: str = ""
    """``serviceAccountName`` of job pods (its token is never mounted); empty: the namespace's default."""
    image_pull_secrets: tuple[str, ...] = ()
    """Names of Secrets in the namespace used to pull step images (comma-separated)."""


@dataclass(frozen=True)
class LogsSettings:
    api_key: str = field(default="", repr=False)
    """When set, the logs API's job routes need Basic ``hades:<key>`` or ``Bearer <key>``; empty: open, as the
    original Log Manager was. A key of its own, so a dashboard can read without being able to submit."""
    callback_secret: str = field(default="", repr=False)
    """When set, callbacks carry ``X-Hades-Signature: sha256=<hex HMAC of the body>``."""
    callback_allowed_hosts: tuple[str, ...] = ()
    """When set, callbacks only go to these hosts (exact names or ``*.example.org``)."""
    callback_allowed_networks: tuple[str, ...] = ()
    """CIDRs callbacks may reach although they are loopback, link-local or private (``10.0.0.0/8``); empty: none
    of them, so a callback cannot probe the services, the cloud metadata address or the internal network."""
    callback_max_attempts: int = 5
    callback_timeout_s: float = 10.0
    callback_backoff_s: float = 1.0
    """First retry delay; doubles each attempt, with jitter."""
    job_log_max_bytes: int = 10 * 1024 * 1024
    """Log bytes kept per job by the log collector."""
    ui_submit_url: str = ""
    """The submit function's base URL as the logs function reaches it (``http://hades-submit:8080``); when set,
    the dashboard at ``/ui/`` shows a cancel button, which the logs function forwards there. Empty: no cancel."""
    ui_submit_api_key: str = field(default="", repr=False)
    """The key sent as ``Bearer`` with a dashboard cancel (submit's ``HADES_API_KEY``); it never reaches browsers."""


@dataclass(frozen=True)
class ResultsSettings:
    """Per-job limits on what a job keeps (``artifacts`` and ``reports`` in the job document); what is over them is
    skipped with a reason on the record, never a failed job. Files live in a JetStream Object Store, with the
    replicas and age of the events (``HADES_NATS_REPLICAS``, ``HADES_EVENTS_MAX_AGE_SECONDS``)."""

    max_files: int = 100
    """Most files one job keeps (artifacts and reports together): a glob matching a whole tree stays bounded."""
    max_file_bytes: int = 64 * 1024**2
    """Largest single file kept (a built jar or a coverage report fits; a disk image does not)."""
    max_bytes: int = 256 * 1024**2
    """Most bytes one job keeps in all, so one job cannot fill the store that every job's results share."""
    report_max_bytes: int = 8 * 1024**2
    """Largest JUnit XML file parsed: the test summary of a big suite is a few MiB; beyond it the report is kept
    unparsed (marked so) rather than parsed, bounding the dispatcher's memory and time per report."""
    k8s_image: str = "busybox:1.36"
    """Image of the collector container that ends a Kubernetes job pod asking for results (it needs ``sh``,
    ``find``, ``tar`` and ``base64``); a private registry's copy where the cluster cannot pull from Docker Hub."""


@dataclass(frozen=True)
class TenantSettings:
    """Who jobs are charged to and how much of the queue each may hold (runtime/tenants.py, docs/tenants.md)."""

    submit_keys: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    """(tenant, key) pairs from ``HADES_SUBMIT_API_KEYS_FILE``: a job submitted with one of these keys belongs to
    its tenant, whatever its document says. Empty: only ``HADES_API_KEY`` (or nothing) is asked for."""
    names: tuple[str, ...] = ()
    """Tenants known by name: their own metric series (the rest are ``other``) and, when set, the only tenants a
    document's ``tenant`` field may name. Tenants of the keys file and the quotas are known too."""
    max_queued: tuple[tuple[str, int], ...] = ()
    """Per tenant, most jobs waiting (submitted, not yet taken by a dispatcher); ``*`` for every tenant not named.
    A submit past it is a 429. Empty: no limit, as before tenants."""
    build_metadata_key: str = ""
    """For ``POST /build``: the job metadata key whose value names the tenant (when it is a tenant name); empty:
    /build jobs belong to the key's tenant or ``default``."""
    queue_full_retry_after_s: int = 30
    """``Retry-After`` of a 429 for a full tenant queue: about how long a slot takes to free up."""
    weights: tuple[tuple[str, int], ...] = ()
    """Per tenant, its share inside a lane (``*``: every tenant not named; default 1): dispatch's fair share gives a
    free slot to the tenant with the fewest running jobs per unit of weight (``runtime.fairshare``)."""
    max_running: tuple[tuple[str, int], ...] = ()
    """Per tenant, most jobs running at once in the cluster (``*``: every tenant not named); empty: no cap. It is
    the ``max_ack_pending`` of the tenant's dispatch consumers, so JetStream holds it for every dispatcher."""

    def known(self) -> frozenset[str]:
        """Every tenant the operator named somewhere, and ``default``."""
        named = {tenant for tenant, _ in self.submit_keys} | set(self.names)
        for listed in (self.max_queued, self.weights, self.max_running):
            named |= {tenant for tenant, _ in listed if tenant != "*"}
        return frozenset(named | {tenants.DEFAULT})

    def queued_limit(self, tenant: str) -> int | None:
        """The tenant's ``max_queued``, its ``*`` default, or None (no limit)."""
        limits = dict(self.max_queued)
        return limits.get(tenant, limits.get("*"))

    def weight(self, tenant: str) -> int:
        """The tenant's weight, its ``*`` default, or 1."""
        weights = dict(self.weights)
        return weights.get(tenant, weights.get("*", 1))

    def running_limit(self, tenant: str) -> int | None:
        """The tenant's ``max_running``, its ``*`` default, or None (no cap)."""
        limits = dict(self.max_running)
        return limits.get(tenant, limits.get("*"))


@dataclass(frozen=True)
class Settings:
    nats: NatsSettings = field(default_factory=NatsSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    dispatch: DispatchSettings = field(default_factory=DispatchSettings)
    docker: DockerSettings = field(default_factory=DockerSettings)
    kubernetes: KubernetesSettings = field(default_factory=KubernetesSettings)
    logs: LogsSettings = field(default_factory=LogsSettings)
    results: ResultsSettings = field(default_factory=ResultsSettings)
    tenants: TenantSettings = field(default_factory=TenantSettings)
    log_level: str = "INFO"
    log_format: str = "plain"
    """``plain`` lines for a terminal, or ``json``: one JSON object per line with the job id and trace id of every
    line about a job, for a log collector (Loki, Elasticsearch)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        values: dict[str, dict[str, Any]] = {}
        top: dict[str, Any] = {}
        for var, (path, parse) in ENV_VARS.items():
            raw = env.get(var)
            if raw is None or raw == "":
                continue
            _refuse_service_link(var, raw)
            try:
                value = parse(raw)
            except (TypeError, ValueError) as exc:
                raise SettingsError(f"{var} {exc}, got {raw!r}") from None
            group, _, name = path.rpartition(".")
            if group:
                values.setdefault(group, {})[name] = value
            else:
                top[name] = value
        groups = {
            "nats": NatsSettings,
            "http": HttpSettings,
            "limits": LimitSettings,
            "dispatch": DispatchSettings,
            "docker": DockerSettings,
            "kubernetes": KubernetesSettings,
            "logs": LogsSettings,
            "results": ResultsSettings,
            "tenants": TenantSettings,
        }
        limits = values.setdefault("limits", {})
        for default_var, default_name, max_name in _DEFAULT_FOLLOWS_MAX:
            # An operator who only lowers a maximum means the default to follow it.
            if not env.get(default_var) and max_name in limits:
                limits[default_name] = min(getattr(LimitSettings, default_name), limits[max_name])
        settings = cls(**{g: groups[g](**kw) for g, kw in values.items()}, **top)
        settings.check()
        return settings

    def check(self) -> None:
        """Cross-field rules that no single parser can see."""
        lim = self.limits
        if lim.default_cpu > lim.max_cpu:
            raise SettingsError("HADES_DEFAULT_CPU_LIMIT must not exceed HADES_MAX_CPU_LIMIT")
        if lim.default_memory_bytes > lim.max_memory_bytes:
            raise SettingsError("HADES_DEFAULT_MEMORY_LIMIT must not exceed HADES_MAX_MEMORY_LIMIT")
        if lim.default_pids > lim.max_pids:
            raise SettingsError("HADES_DEFAULT_PIDS_LIMIT must not exceed HADES_MAX_PIDS_LIMIT")
        if lim.default_timeout_s > lim.max_timeout_s:
            raise SettingsError("HADES_DEFAULT_TIMEOUT_SECONDS must not exceed HADES_MAX_TIMEOUT_SECONDS")
        if self.kubernetes.request_fraction > 1:
            raise SettingsError("HADES_K8S_REQUEST_FRACTION must be a number > 0 and ≤ 1")
        if self.logs.ui_submit_api_key and not self.logs.api_key:
            # The dashboard would cancel with submit's key on behalf of anyone who can open it.
            raise SettingsError("HADES_UI_SUBMIT_API_KEY needs HADES_LOGS_API_KEY: the dashboard must not be open")
        if self.results.max_files > 1000:
            # Every kept file is listed in the job's terminal event and record, which must stay well under 1 MiB.
            raise SettingsError("HADES_RESULTS_MAX_FILES must be at most 1000")
        if self.results.max_file_bytes > self.results.max_bytes:
            raise SettingsError("HADES_RESULTS_MAX_FILE_BYTES must not exceed HADES_RESULTS_MAX_BYTES")
        if self.tenants.submit_keys and not self.http.api_key:
            # Cancels and dead letters are the operator's: with tenant keys only, they would be open to anyone.
            raise SettingsError("HADES_SUBMIT_API_KEYS_FILE needs HADES_API_KEY (the operator's key)")
        if any(key == self.http.api_key for _, key in self.tenants.submit_keys):
            raise SettingsError("HADES_SUBMIT_API_KEYS_FILE must not hold HADES_API_KEY: it would name a tenant")
        if self.nats.duplicate_window_s < 600:
            raise SettingsError("HADES_DUPLICATE_WINDOW_SECONDS must be at least 600 (10 minutes)")


_SERVICE_LINK = re.compile(r"(tcp|udp|sctp)://[0-9a-fA-F.:\[\]]+:\d+")


def _refuse_service_link(var: str, raw: str) -> None:
    """Kubernetes injects ``<SERVICE>_PORT=tcp://<cluster ip>:<port>`` for every Service in the namespace unless
    the pod sets ``enableServiceLinks: false``; a Service named ``hades-submit`` thus overwrites
    ``HADES_SUBMIT_PORT``. Name that cause instead of failing on the value."""
    if var.endswith("_PORT") and _SERVICE_LINK.fullmatch(raw.strip()):
        service = var.removesuffix("_PORT").lower().replace("_", "-")
        raise SettingsError(
            f"{var} is {raw!r}, a Kubernetes service link (the Service {service!r} in the pod's namespace), not a "
            "setting: set `enableServiceLinks: false` in the pod spec (the shipped manifests do)"
        )


def _int(minimum: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"must be an integer ≥ {minimum}") from None
        if value < minimum:
            raise ValueError(f"must be an integer ≥ {minimum}")
        return value

    return parse


def _float(minimum: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"must be a number ≥ {minimum:g}") from None
        if not math.isfinite(value) or not value >= minimum:
            raise ValueError(f"must be a number ≥ {minimum:g}")
        return value

    return parse


def _positive_float(raw: str) -> float:
    value = _float(0)(raw)
    if value == 0:
        raise ValueError("must be a number > 0")
    return value


def _str(raw: str) -> str:
    return raw.strip()


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("", "0", "false", "no", "off"):
        return False
    raise ValueError("must be true or false")


def _user(raw: str) -> str:
    value = raw.strip()
    if value and not re.fullmatch(r"\d{1,10}(:\d{1,10})?", value):
        raise ValueError("must be a numeric uid or uid:gid such as 65534:65534 (names depend on the image)")
    return value


def _choice(*options: str) -> Callable[[str], str]:
    by_lower = {option.lower(): option for option in options}

    def parse(raw: str) -> str:
        value = by_lower.get(raw.strip().lower())
        if value is None:
            raise ValueError(f"must be one of {', '.join(options)}")
        return value

    return parse


def _list(raw: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in raw.split(",") if item.strip())


def _cidrs(raw: str) -> tuple[str, ...]:
    try:
        return tuple(str(ipaddress.ip_network(item, strict=False)) for item in _list(raw))
    except ValueError as exc:
        raise ValueError(f"must be comma-separated CIDRs such as 10.0.0.0/8 ({exc})") from None


def _memory(raw: str) -> int:
    value = units.parse_memory(raw)
    if value is None:
        raise ValueError("must be a memory size such as 512M or 2G")
    return value


def _pairs(raw: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for item in _list(raw):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError("must be comma-separated key=value pairs")
        pairs.append((key.strip(), value.strip()))
    return tuple(pairs)


def _json_objects(raw: str) -> tuple[dict[str, Any], ...]:
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise ValueError("must be a JSON list of objects")
    return tuple(value)


def _weights(raw: str) -> tuple[int, int, int]:
    parts = raw.split(":")
    try:
        weights = tuple(int(p) for p in parts)
    except ValueError:
        weights = ()
    if len(weights) != 3 or any(w < 1 for w in weights):
        raise ValueError("must be three integers ≥ 1 as high:normal:low, e.g. 6:3:1")
    return (weights[0], weights[1], weights[2])


def _tenant_names(raw: str) -> tuple[str, ...]:
    names = _list(raw)
    for name in names:
        if not tenants.is_name(name):
            raise ValueError(f"{tenants.NAME_RULE} (not {name!r})")
    return names


def _tenant_numbers(minimum: int) -> Callable[[str], tuple[tuple[str, int], ...]]:
    def parse(raw: str) -> tuple[tuple[str, int], ...]:
        limits = []
        for tenant, value in _pairs(raw):
            if tenant != "*" and not tenants.is_name(tenant):
                raise ValueError(f"must be tenant=number pairs (or *=number); {tenants.NAME_RULE} (not {tenant!r})")
            limits.append((tenant, _int(minimum)(value)))
        return tuple(limits)

    return parse


def _submit_keys(raw: str) -> tuple[tuple[str, str], ...]:
    """A file of ``tenant: key`` lines (``#`` comments and blank lines skipped), e.g. a mounted Secret."""
    path = raw.strip()
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as exc:
        raise ValueError(f"must name a readable file of 'tenant: key' lines ({exc.strerror})") from None
    keys: list[tuple[str, str]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        tenant, sep, key = (part.strip() for part in line.partition(":"))
        if not sep or not tenants.is_name(tenant) or len(key) < 16:
            # The key itself is never echoed: the message names the line only.
            raise ValueError(f"line {number} must be 'tenant: key' with a tenant name and a key of 16+ characters")
        if any(key == known for _, known in keys):
            raise ValueError(f"line {number} repeats a key: each key names one tenant")
        keys.append((tenant, key))
    if not keys:
        raise ValueError("must name a file with at least one 'tenant: key' line")
    return tuple(keys)


_DEFAULT_FOLLOWS_MAX = (
    ("HADES_DEFAULT_CPU_LIMIT", "default_cpu", "max_cpu"),
    ("HADES_DEFAULT_MEMORY_LIMIT", "default_memory_bytes", "max_memory_bytes"),
    ("HADES_DEFAULT_PIDS_LIMIT", "default_pids", "max_pids"),
    ("HADES_DEFAULT_TIMEOUT_SECONDS", "default_timeout_s", "max_timeout_s"),
)

ENV_VARS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "HADES_NATS_URL": ("nats.url", _str),
    "HADES_NATS_CONNECT_TIMEOUT_SECONDS": ("nats.connect_timeout_s", _positive_float),
    "HADES_NATS_PUBLISH_TIMEOUT_SECONDS": ("nats.publish_timeout_s", _positive_float),
    "HADES_NATS_REPLICAS": ("nats.replicas", _int(1)),
    "HADES_DUPLICATE_WINDOW_SECONDS": ("nats.duplicate_window_s", _positive_float),
    "HADES_EVENTS_MAX_AGE_SECONDS": ("nats.events_max_age_s", _positive_float),
    "HADES_EVENTS_MAX_BYTES": ("nats.events_max_bytes", _int(-1)),
    "HADES_HTTP_HOST": ("http.host", _str),
    "HADES_SUBMIT_PORT": ("http.submit_port", _int(0)),
    "HADES_LOGS_PORT": ("http.logs_port", _int(0)),
    "HADES_DISPATCH_PORT": ("http.dispatch_port", _int(0)),
    "HADES_API_KEY": ("http.api_key", _str),
    "HADES_MAX_PAYLOAD_BYTES": ("http.max_payload_bytes", _int(1024)),
    "HADES_SHUTDOWN_TIMEOUT_SECONDS": ("http.shutdown_timeout_s", _float(0)),
    "HADES_BODY_READ_TIMEOUT_SECONDS": ("http.body_read_timeout_s", _positive_float),
    "HADES_HEADER_READ_TIMEOUT_SECONDS": ("http.header_read_timeout_s", _float(0)),
    "HADES_DEFAULT_CPU_LIMIT": ("limits.default_cpu", _positive_float),
    "HADES_MAX_CPU_LIMIT": ("limits.max_cpu", _positive_float),
    "HADES_DEFAULT_MEMORY_LIMIT": ("limits.default_memory_bytes", _memory),
    "HADES_MAX_MEMORY_LIMIT": ("limits.max_memory_bytes", _memory),
    "HADES_DEFAULT_PIDS_LIMIT": ("limits.default_pids", _int(1)),
    "HADES_MAX_PIDS_LIMIT": ("limits.max_pids", _int(1)),
    "HADES_DEFAULT_TIMEOUT_SECONDS": ("limits.default_timeout_s", _int(1)),
    "HADES_MAX_TIMEOUT_SECONDS": ("limits.max_timeout_s", _int(1)),
    "HADES_ALLOWED_NETWORKS": ("limits.allowed_networks", _list),
    "HADES_ALLOWED_IMAGES": ("limits.allowed_images", _list),
    "HADES_EXECUTOR": ("dispatch.executor", _choice("docker", "kubernetes")),
    "HADES_CONCURRENCY": ("dispatch.concurrency", _int(1)),
    "HADES_LANE_WEIGHTS": ("dispatch.lane_weights", _weights),
    "HADES_ACK_WAIT_SECONDS": ("dispatch.ack_wait_s", _positive_float),
    "HADES_MAX_DELIVER": ("dispatch.max_deliver", _int(1)),
    "HADES_SHUTDOWN_GRACE_SECONDS": ("dispatch.shutdown_grace_s", _float(0)),
    "HADES_CANCEL_GRACE_SECONDS": ("dispatch.cancel_grace_s", _float(0)),
    "HADES_PULL_TIMEOUT_SECONDS": ("dispatch.pull_timeout_s", _positive_float),
    "HADES_IMAGE_PULL_TIMEOUT_SECONDS": ("dispatch.image_pull_timeout_s", _positive_float),
    "HADES_LOG_FLUSH_INTERVAL_SECONDS": ("dispatch.log_flush_interval_s", _positive_float),
    "HADES_LOG_BATCH_LINES": ("dispatch.log_batch_lines", _int(1)),
    "HADES_LOG_LINE_MAX_BYTES": ("dispatch.log_line_max_bytes", _int(256)),
    "HADES_JOB_LOG_MAX_BYTES": ("dispatch.job_log_max_bytes", _int(1024)),
    "HADES_SECRET_PATTERNS": ("dispatch.secret_patterns", _list),
    "HADES_SECRET_KEYS": ("dispatch.secret_keys", _list),
    "HADES_SECRET_MIN_CHARS": ("dispatch.secret_min_chars", _int(1)),
    "HADES_SCOPE": ("dispatch.scope", _str),
    "HADES_STEP_USER": ("dispatch.step_user", _user),
    "HADES_STEP_READ_ONLY_ROOT": ("dispatch.step_read_only_root", _bool),
    "HADES_SHARED_MAX_BYTES": ("dispatch.shared_max_bytes", _int(0)),
    "HADES_DOCKER_HOST": ("docker.host", _str),
    "HADES_K8S_NAMESPACE": ("kubernetes.namespace", _str),
    "HADES_K8S_IMAGE_PULL_POLICY": ("kubernetes.image_pull_policy", _choice("Always", "IfNotPresent", "Never")),
    "HADES_K8S_QPS": ("kubernetes.qps", _positive_float),
    "HADES_K8S_BURST": ("kubernetes.burst", _int(1)),
    "HADES_K8S_TTL_AFTER_FINISHED_SECONDS": ("kubernetes.ttl_after_finished_s", _int(0)),
    "HADES_K8S_UNSCHEDULABLE_TIMEOUT_SECONDS": ("kubernetes.unschedulable_timeout_s", _positive_float),
    "HADES_K8S_IMAGE_PULL_TIMEOUT_SECONDS": ("kubernetes.image_pull_timeout_s", _positive_float),
    "HADES_K8S_REQUEST_FRACTION": ("kubernetes.request_fraction", _positive_float),
    "HADES_K8S_NODE_SELECTOR": ("kubernetes.node_selector", _pairs),
    "HADES_K8S_TOLERATIONS": ("kubernetes.tolerations", _json_objects),
    "HADES_K8S_SERVICE_ACCOUNT": ("kubernetes.service_account", _str),
    "HADES_K8S_IMAGE_PULL_SECRETS": ("kubernetes.image_pull_secrets", _list),
    "HADES_LOGS_API_KEY": ("logs.api_key", _str),
    "HADES_CALLBACK_SECRET": ("logs.callback_secret", _str),
    "HADES_CALLBACK_ALLOWED_HOSTS": ("logs.callback_allowed_hosts", _list),
    "HADES_CALLBACK_ALLOWED_NETWORKS": ("logs.callback_allowed_networks", _cidrs),
    "HADES_CALLBACK_MAX_ATTEMPTS": ("logs.callback_max_attempts", _int(1)),
    "HADES_CALLBACK_TIMEOUT_SECONDS": ("logs.callback_timeout_s", _positive_float),
    "HADES_CALLBACK_BACKOFF_SECONDS": ("logs.callback_backoff_s", _float(0)),
    "HADES_LOGS_JOB_LOG_MAX_BYTES": ("logs.job_log_max_bytes", _int(1024)),
    "HADES_UI_SUBMIT_URL": ("logs.ui_submit_url", _str),
    "HADES_UI_SUBMIT_API_KEY": ("logs.ui_submit_api_key", _str),
    "HADES_RESULTS_MAX_FILES": ("results.max_files", _int(1)),
    "HADES_RESULTS_MAX_FILE_BYTES": ("results.max_file_bytes", _int(1)),
    "HADES_RESULTS_MAX_BYTES": ("results.max_bytes", _int(1)),
    "HADES_RESULTS_REPORT_MAX_BYTES": ("results.report_max_bytes", _int(1024)),
    "HADES_RESULTS_K8S_IMAGE": ("results.k8s_image", _str),
    "HADES_SUBMIT_API_KEYS_FILE": ("tenants.submit_keys", _submit_keys),
    "HADES_TENANTS": ("tenants.names", _tenant_names),
    "HADES_TENANT_MAX_QUEUED": ("tenants.max_queued", _tenant_numbers(0)),
    "HADES_BUILD_TENANT_METADATA_KEY": ("tenants.build_metadata_key", _str),
    "HADES_TENANT_RETRY_AFTER_SECONDS": ("tenants.queue_full_retry_after_s", _int(1)),
    "HADES_TENANT_WEIGHTS": ("tenants.weights", _tenant_numbers(1)),
    "HADES_TENANT_MAX_RUNNING": ("tenants.max_running", _tenant_numbers(1)),
    "HADES_LOG_LEVEL": ("log_level", _choice("debug", "info", "warning", "error")),
    "HADES_LOG_FORMAT": ("log_format", _choice("plain", "json")),
}
