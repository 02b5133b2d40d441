"""Configuration: a TOML file, ``COMFYWATCH_*`` environment overrides and secret files.

No file at all gives one local target ``http://127.0.0.1:8188`` and a listener on ``127.0.0.1:9877``.
Unknown keys are errors so that a typo (``intervall``) never passes silently: the message names the closest
known key. Every duration, number, string and list has a range. Errors are reported as
``targets[1].interval: must be at least 1s`` lines; secret values are never echoed. :func:`load_config` is
the one loader (``check-config``, ``run`` and reload all call it): whatever the file or the environment
holds, it returns a :class:`Config` or raises :class:`ConfigError`, never anything else.
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import json
import os
import re
import ssl
import stat
import sys
import tomllib
import types
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args, get_origin
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError
from yarl import URL

from comfywatch.basic_auth import basic_auth_header
from comfywatch.config.durations import format_duration, format_size, parse_duration, parse_size
from comfywatch.config.toml_bounds import dotted_line_problem
from comfywatch.parse.canary_events import MAX_OUTPUT_IMAGES
from comfywatch.parse.text import clean, sanitize

__all__ = [
    "DEFAULT_LISTEN",
    "DEFAULT_LOCAL_URL",
    "CanaryConfig",
    "Config",
    "ConfigError",
    "Credentials",
    "MetricsConfig",
    "ProbeConfig",
    "ProbeModule",
    "StatusConfig",
    "TargetConfig",
    "WorkflowWatch",
    "config_file",
    "is_valid_name",
    "load_config",
    "probe_target_allowed",
    "read_bounded_bytes",
    "read_bounded_text",
    "resolve_credentials",
    "resolve_module_credentials",
    "target_from_url_option",
    "url_problem",
]

DEFAULT_LISTEN = "127.0.0.1:9877"
DEFAULT_LOCAL_URL = "http://127.0.0.1:8188"
DEFAULT_CLOUD_URL = "https://cloud.comfy.org"
CREDENTIAL_NAME = "comfywatch_cloud_api_key"
_Number = TypeVar("_Number", int, float)
# Both are matched whole (fullmatch): with match, "$" also matches before a final newline.
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_RESERVED_LABELS = frozenset(
    {"target", "job", "instance", "__name__", "reason", "endpoint", "canary", "phase"}
)


#: Largest config file read. Ten thousand short targets fit (more belong in discovery files); a log file named
#: by mistake is refused at once, and the worst a file can cost is parsing one megabyte (tomllib needs
#: seconds per megabyte of pathological input, such as an array of a million numbers).
MAX_CONFIG_BYTES = 2**20
#: Largest secret file read (headers, tokens, keys): a few lines, never a disk image named by mistake.
MAX_SECRET_BYTES = 64 * 2**10
#: Largest CA file read: a system's whole bundle (about 150 certificates) is some 220 KB.
MAX_CA_FILE_BYTES = 4 * 2**20
MAX_TARGETS = 10_000
MAX_SHARDS = 1_000
MAX_MODULES = 100
MAX_DISCOVERY_FILES = 100
MAX_WATCHED_WORKFLOWS = 100
MAX_ALLOW_ENTRIES = 1_000
MAX_PATH_CHARS = 4096
MAX_URL_CHARS = 2048
#: Problems printed for one load; the rest are counted on one more line.
MAX_PROBLEMS = 100
#: Characters of one problem line (a location can hold a key of any length).
MAX_PROBLEM_CHARS = 500

_HOUR = 3600.0
_DAY = 86400.0
#: The type of a validation error that carries its own ``(location, message)`` problems (several at once).
_LOCATED = "located_problems"


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` holds one ``location: message`` line per problem.

    Lines are made printable (no control characters, encodable, bounded) and their number is bounded: a
    problem can quote a key of the file, and a file can hold a million of them.
    """

    def __init__(self, problems: Sequence[str], source: str = "config") -> None:
        lines = [clean(problem, MAX_PROBLEM_CHARS)[0] for problem in problems[:MAX_PROBLEMS]]
        if len(problems) > MAX_PROBLEMS:
            lines.append(f"{len(problems) - MAX_PROBLEMS} more problems not shown")
        self.problems = lines
        self.source = clean(source, MAX_PROBLEM_CHARS)[0]
        super().__init__("\n".join(f"{self.source}: {p}" for p in self.problems))


def is_valid_name(text: str) -> bool:
    """Whether *text* may name a target or a module (a target's name becomes its ``target`` label)."""
    return _NAME.fullmatch(text) is not None


def _within(
    parse_value: Callable[[object], _Number], show: Callable[[_Number], str], minimum: _Number, maximum: _Number
) -> Callable[[object], _Number]:
    """A parser that also enforces [minimum, maximum], stating the bound in the unit users write."""

    def parse(value: object) -> _Number:
        parsed = parse_value(value)
        if parsed < minimum:
            raise ValueError(f"must be at least {show(minimum)}")
        if parsed > maximum:
            raise ValueError(f"must be at most {show(maximum)}")
        return parsed

    return parse


def _duration_within(minimum: float, maximum: float) -> Callable[[object], float]:
    return _within(parse_duration, format_duration, minimum, maximum)


def _size_within(minimum: int, maximum: int) -> Callable[[object], int]:
    return _within(parse_size, format_size, minimum, maximum)


def _at_most(limit: int) -> Callable[[Any], Any]:
    """Refuse a list or table of more than *limit* entries before any entry is validated (which costs
    seconds for a hundred thousand tables)."""

    def check(value: Any) -> Any:
        if isinstance(value, list | tuple | dict) and len(value) > limit:
            raise ValueError(f"must have at most {limit} entries")
        return value

    return check


def _path_text(value: Any) -> Any:
    """A path as the OS will get it: bounded, and without the NUL byte no system call accepts."""
    if isinstance(value, str):
        if "\0" in value:
            raise ValueError("must not contain a NUL character")
        if len(value) > MAX_PATH_CHARS:
            raise ValueError(f"must be at most {MAX_PATH_CHARS} characters")
        if not value.strip():
            raise ValueError("must not be empty")
    return value


#: How often a target is polled: once a second at most, once a day at least.
Interval = Annotated[float, BeforeValidator(_duration_within(1.0, _DAY))]
#: One request (or one probe): long enough for a TLS handshake, bounded by the hour.
RequestTimeout = Annotated[float, BeforeValidator(_duration_within(0.1, _HOUR))]
#: A whole canary run: submit, queue, execute, fetch the output.
CanaryTimeout = Annotated[float, BeforeValidator(_duration_within(1.0, _DAY))]
#: How long a running job may go without a progress event.
StallAfter = Annotated[float, BeforeValidator(_duration_within(0.1, 365 * _DAY))]
#: Cap on one response body: enough for /system_stats, at most what the daemon may hold in memory per read.
BodySize = Annotated[int, BeforeValidator(_size_within(2**10, 2**30))]
FilePath = Annotated[Path, BeforeValidator(_path_text)]
PathPattern = Annotated[str, BeforeValidator(_path_text)]


def _each_once(value: tuple[str, ...]) -> tuple[str, ...]:
    if len(set(value)) != len(value):
        raise ValueError("each check may appear once")
    return value


Checks = Annotated[
    tuple[Literal["system", "queue", "jobs"], ...], BeforeValidator(_at_most(3)), AfterValidator(_each_once)
]


# ---------------------------------------------------------------------------------------------------------
# /probe allow-lists.

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
#: Longest allow-list entry: a DNS name (253) with a port.
_MAX_ALLOW_ENTRY_CHARS = 300
_SURROGATE = re.compile("[\ud800-\udfff]")
_HOSTNAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*\.?")
_BRACKETED = re.compile(r"\[([^\]]+)\](?::(\d{1,5}))?")


@dataclass(frozen=True)
class _Endpoint:
    """Where a URL connects: its scheme, its host as the HTTP client encodes it (or its IP), and its port."""

    scheme: str
    host: str | IPAddress
    port: int


@dataclass(frozen=True)
class _HostPattern:
    """One allow-list entry: a network or one hostname, optionally with a port."""

    network: IPNetwork | None
    hostname: str | None
    port: int | None

    def __str__(self) -> str:
        if self.network is not None:
            address = self.network.network_address
            text = str(self.network) if self.network.prefixlen < self.network.max_prefixlen else str(address)
            if self.port is None:
                return text
            return f"[{text}]:{self.port}" if address.version == 6 else f"{text}:{self.port}"
        return f"{self.hostname}:{self.port}" if self.port is not None else str(self.hostname)

    def matches(self, endpoint: _Endpoint) -> bool:
        if self.port is not None and self.port != endpoint.port:
            return False
        if self.network is not None:
            return not isinstance(endpoint.host, str) and endpoint.host in self.network
        return endpoint.host == self.hostname


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError("invalid port")
    return int(text)


def _encoded_hostname(host: str) -> str:
    """*host* lowercased and IDNA-encoded exactly as the HTTP client (yarl) encodes it before connecting."""
    try:
        encoded = URL.build(scheme="http", host=host).raw_host or ""
    except ValueError:
        encoded = ""
    if len(encoded) > 253 or not _HOSTNAME.fullmatch(encoded):
        raise ValueError("not a valid host name")
    last_label = encoded.rstrip(".").rsplit(".", 1)[-1]
    if last_label.isdigit() or last_label.startswith("0x"):
        # No top-level domain is a number: "010.0.0.1" or "2130706433" is an IP address in a form the
        # resolver reads differently (octal, one 32-bit number) from what it looks like.
        raise ValueError("not a valid IP address or host name")
    return encoded


@functools.lru_cache(maxsize=4096)
def _parse_allow_entry(text: str) -> _HostPattern:
    """``host``, ``host:port``, an IP address (``10.0.0.5``, ``[::1]:8188``) or a network (``10.0.0.0/8``)."""
    entry = text.strip()
    if not entry:
        raise ValueError("must not be empty")
    if "://" in entry:
        raise ValueError("expected a host, host:port or network, not a URL")
    if "/" in entry:
        try:
            return _HostPattern(ipaddress.ip_network(entry, strict=True), None, None)
        except ValueError as exc:
            raise ValueError(f"not a network: {exc}") from None
    bracketed = _BRACKETED.fullmatch(entry)
    if bracketed is not None or entry.count(":") > 1:
        address_text, port_text = bracketed.groups() if bracketed is not None else (entry, None)
        try:
            address = ipaddress.IPv6Address(address_text)
        except ValueError:
            raise ValueError("not an IPv6 address (write one with a port as [fd00::1]:8188)") from None
        return _HostPattern(ipaddress.ip_network(address), None, _port(port_text) if port_text else None)
    host, sep, port_text = entry.partition(":")
    port = _port(port_text) if sep else None
    try:
        return _HostPattern(ipaddress.ip_network(ipaddress.IPv4Address(host)), None, port)
    except ValueError:
        return _HostPattern(None, _encoded_hostname(host), port)


def _allow_entry(value: str) -> str:
    """An allow-list entry in its canonical form (lowercase, IDNA, compressed IPv6, ``/32`` dropped)."""
    if len(value) > _MAX_ALLOW_ENTRY_CHARS:
        raise ValueError(f"must be at most {_MAX_ALLOW_ENTRY_CHARS} characters")
    return str(_parse_allow_entry(value))


AllowList = Annotated[
    tuple[Annotated[str, AfterValidator(_allow_entry)], ...], BeforeValidator(_at_most(MAX_ALLOW_ENTRIES))
]


def _endpoint(url: str) -> _Endpoint | None:
    """Where the HTTP client connects for *url* (None when it would not: no host, a bad port, a scope id)."""
    try:
        parsed = URL(url_without_userinfo(url))
        host, port = parsed.raw_host, parsed.port
    except ValueError:
        return None
    if not host or port is None or "%" in host:
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return _Endpoint(parsed.scheme, host, port)
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    return _Endpoint(parsed.scheme, mapped or address, port)


#: Endpoints of configured targets, parsed once (probe URLs are not cached: they may carry a password).
_target_endpoint = functools.lru_cache(maxsize=4096)(_endpoint)


def _uses_module_secrets(target: TargetConfig, module: ProbeModule) -> bool:
    """Whether *target* is already sent every secret *module* sends (it names the same files)."""
    files = module.secret_files
    return bool(files) and all(getattr(target, name) == path for name, path in files.items())


def probe_target_allowed(config: Config, module_name: str, url: str) -> str | None:
    """Why ``/probe`` must not connect to *url* with module *module_name*, or None when it may.

    ``[probe] allow`` (when set) limits every module. A module's own ``allow`` (when set) limits it further.
    A module that sends credentials (``headers_file``, ``bearer_token_file``) and has no ``allow`` may only
    probe the targets of the config that use the same files, with the same scheme, host and port: its
    secrets go nowhere they do not already go. Host names are compared as the HTTP client encodes them and
    are never resolved: a network entry matches IP-address targets only. The reason never repeats the URL.
    """
    module = config.modules.get(module_name)
    if module is None:
        return "unknown module"
    if config.probe.allow is None and module.allow is None and not module.secret_files:
        return None
    endpoint = _endpoint(url)
    if endpoint is None:
        return "the target's host cannot be checked against an allow list"
    if config.probe.allow is not None and not _allowed(config.probe.allow, endpoint):
        return "target not in [probe] allow"
    if module.allow is not None:
        if not _allowed(module.allow, endpoint):
            return f"target not in modules.{module_name}.allow"
        return None
    if module.secret_files and not any(
        _target_endpoint(target.url) == endpoint for target in config.targets if _uses_module_secrets(target, module)
    ):
        return (f"module {module_name!r} sends credentials, and only to the targets that use the same files; "
                f"list other hosts in modules.{module_name}.allow")
    return None


def _allowed(entries: Sequence[str], endpoint: _Endpoint) -> bool:
    return any(_parse_allow_entry(entry).matches(endpoint) for entry in entries)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    listen: str = Field(default=DEFAULT_LISTEN, max_length=300)
    #: Prometheus exporter-toolkit web-config.yml (TLS + basic auth for /metrics).
    web_config_file: FilePath | None = None
    #: Upper bound on requests in flight to all targets together.
    max_concurrency: int = Field(default=64, ge=1, le=10_000)
    #: "i/N": this replica owns the targets whose rendezvous hash picks shard i of N.
    shard: str = "0/1"

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
            raise ValueError('expected "host:port", e.g. "127.0.0.1:9877"')
        return value

    @field_validator("shard")
    @classmethod
    def _shard(cls, value: str) -> str:
        match = re.fullmatch(r"(\d{1,4})/(\d{1,4})", value.strip())
        if not match or not 0 <= int(match.group(1)) < int(match.group(2)) <= MAX_SHARDS:
            raise ValueError(f'expected "i/N" with 0 <= i < N <= {MAX_SHARDS}, e.g. "0/3"')
        return value.strip()

    @property
    def shard_index(self) -> int:
        return int(self.shard.split("/")[0])

    @property
    def shard_count(self) -> int:
        return int(self.shard.split("/")[1])


class Defaults(_Strict):
    interval: Interval = 15.0
    timeout: RequestTimeout = 5.0
    stall_after: StallAfter = 600.0
    #: Hard cap on any response body: a 2 GB answer must not be read into memory.
    max_body_size: BodySize = 32 * 2**20
    #: Consecutive polls with pending > 0 and nothing running before the worker counts as not consuming.
    worker_idle_polls: int = Field(default=4, ge=1, le=1000)
    #: Keep a WebSocket open to each local target: detects a dead server within a second and sees progress.
    websocket_monitor: bool = True
    #: How often a local target's node catalogue, model lists and log are read again when nothing suggests a
    #: change (a restart or a new version reads them at once): /object_info is megabytes on a server with
    #: many node packs.
    catalog_interval: Interval = 1800.0


class MetricsConfig(_Strict):
    """``[metrics]``: how much ``/metrics`` and ``/probe`` say per target."""

    #: "lean": the series dashboards, alerts and the runbook read, counters by reason appearing when first
    #: counted (except those alerts count from zero), a latency histogram for each target's main poll request
    #: only. "full": every counter by reason at 0 from the start, a latency histogram per endpoint, finer buckets.
    detail: Literal["lean", "full"] = "lean"


class StatusConfig(_Strict):
    """``[status]``: the status page's memory of each target (``/``, ``/targets/<name>``, ``/api/v1/status``)."""

    #: Points kept per chart series and target, one at most every ``history_step`` seconds (256 × 15 s: 64
    #: minutes). 0 keeps no history: the pages then show the current state only.
    history_points: int = Field(default=256, ge=0, le=4096)
    history_step: Interval = 15.0


class VerifyConfig(_Strict):
    """What a user canary's output must look like."""

    images: int | None = Field(default=None, ge=0, le=MAX_OUTPUT_IMAGES)
    text_matches: str | None = Field(default=None, max_length=1000)
    any_output: bool = True

    @field_validator("text_matches")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return value


class CanaryConfig(_Strict):
    enabled: bool | None = None  # None: on for local targets, off for cloud (it costs credits)
    workflow: PathPattern = "builtin:preview-image"
    #: The ``canary`` label.
    name: str | None = Field(default=None, max_length=64)
    interval: Interval = 60.0
    #: Independent of the interval: a run that takes longer only delays the next one (runs never overlap).
    timeout: CanaryTimeout = 120.0
    when_busy: Literal["skip", "queue"] = "skip"
    max_runs_per_day: int = Field(default=24, ge=0, le=100_000)
    verify: VerifyConfig | None = None

    @property
    def canary_name(self) -> str:
        if self.name:
            return self.name
        if self.workflow.startswith("builtin:"):
            return self.workflow.removeprefix("builtin:")
        return Path(self.workflow).stem[:64]


class TargetConfig(_Strict):
    name: str
    kind: Literal["local", "cloud"] = "local"
    url: str = Field(default="", max_length=MAX_URL_CHARS)
    interval: Interval | None = None
    timeout: RequestTimeout | None = None
    stall_after: StallAfter | None = None
    headers_file: FilePath | None = None
    bearer_token_file: FilePath | None = None
    api_key_file: FilePath | None = None
    #: Plain-text key in the TOML: refused unless allow_plaintext_api_key says the user insists.
    api_key: SecretStr | None = Field(default=None, max_length=MAX_SECRET_BYTES)
    allow_plaintext_api_key: bool = False
    balance_divisor: float = Field(default=100.0, gt=0, le=1e9, allow_inf_nan=False)
    max_requests_per_minute: int = Field(default=60, ge=1, le=100_000)
    tls_ca_file: FilePath | None = None
    tls_insecure_skip_verify: bool = False
    labels: dict[str, str] = Field(default_factory=dict)
    checks: Checks | None = None
    canary: CanaryConfig = Field(default_factory=CanaryConfig)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not is_valid_name(value):
            raise ValueError("use 1-63 letters, digits, '_', '-', '.' or ':' (it becomes the target label)")
        return value

    @field_validator("labels", mode="before")
    @classmethod
    def _labels(cls, value: Any) -> Any:
        # Before pydantic's own checks: a table of a million labels is refused without converting each.
        return validate_labels(value) if isinstance(value, dict) else value

    @model_validator(mode="after")
    def _url(self) -> TargetConfig:
        url = self.url or (DEFAULT_CLOUD_URL if self.kind == "cloud" else "")
        if not url:
            raise ValueError("url is required for local targets")
        problem = url_problem(url)
        if problem is not None:
            raise ValueError(f"url: {problem}")
        if self.api_key is not None and not self.allow_plaintext_api_key:
            raise ValueError(
                "api_key in the config file is refused: use api_key_file, a systemd credential or "
                "COMFYWATCH_CLOUD_API_KEY (or set allow_plaintext_api_key = true if you insist)"
            )
        object.__setattr__(self, "url", url)
        return self

    @property
    def public_url(self) -> str:
        """The URL without userinfo, query or fragment: safe for labels, logs and doctor output."""
        return strip_secrets_from_url(self.url)

    @property
    def canary_enabled(self) -> bool:
        if self.canary.enabled is None:
            return self.kind == "local"
        return self.canary.enabled


class WorkflowWatch(_Strict):
    """Production workflows linted against the live catalogue of the targets they run on (``[[workflows]]``)."""

    #: An API-format workflow, or a directory of them (its ``*.json`` files).
    path: FilePath
    #: The targets that run them, by name; with ``pool``, also those whose ``pool`` label matches. Neither:
    #: every local target.
    targets: tuple[Annotated[str, Field(max_length=300)], ...] | None = Field(default=None, max_length=MAX_TARGETS)
    pool: str | None = Field(default=None, max_length=300)

    def watches(self, target: TargetConfig) -> bool:
        if self.targets is None and self.pool is None:
            return True
        return target.name in (self.targets or ()) or (self.pool is not None and target.labels.get("pool") == self.pool)


class ProbeModule(_Strict):
    """A ``/probe?module=`` definition (blackbox_exporter style)."""

    kind: Literal["local", "cloud"] = "local"
    timeout: RequestTimeout = 5.0
    headers_file: FilePath | None = None
    bearer_token_file: FilePath | None = None
    checks: Checks = ("system", "queue")
    #: Where this module may probe (see :func:`probe_target_allowed`). None: anywhere for a module without
    #: credentials; for one with credentials, only the targets of this file that use the same files.
    allow: AllowList | None = None

    @property
    def secret_files(self) -> dict[str, Path]:
        """The files whose content this module sends with every probe, by field name."""
        files = {"headers_file": self.headers_file, "bearer_token_file": self.bearer_token_file}
        return {name: path for name, path in files.items() if path is not None}


class ProbeConfig(_Strict):
    """``[probe]``: limits every ``/probe`` module shares."""

    #: Hosts, ``host:port`` pairs and CIDR networks every probed target must match; None: no limit.
    allow: AllowList | None = None


class DiscoveryConfig(_Strict):
    files: Annotated[tuple[PathPattern, ...], BeforeValidator(_at_most(MAX_DISCOVERY_FILES))] = ()
    refresh_interval: Interval = 30.0
    #: Defaults applied to discovered targets (kind, canary, stall_after ...).
    kind: Literal["local", "cloud"] = "local"
    canary: CanaryConfig = Field(default_factory=lambda: CanaryConfig(enabled=False))


class Config(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    defaults: Defaults = Field(default_factory=Defaults)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    status: StatusConfig = Field(default_factory=StatusConfig)
    targets: Annotated[tuple[TargetConfig, ...], BeforeValidator(_at_most(MAX_TARGETS))] = ()
    discovery: DiscoveryConfig = Field(default_factory=DiscoveryConfig)
    modules: Annotated[dict[str, ProbeModule], BeforeValidator(_at_most(MAX_MODULES))] = Field(
        default_factory=lambda: {"local": ProbeModule()}
    )
    probe: ProbeConfig = Field(default_factory=ProbeConfig)
    workflows: Annotated[tuple[WorkflowWatch, ...], BeforeValidator(_at_most(MAX_WATCHED_WORKFLOWS))] = ()
    state_dir: FilePath | None = None

    @field_validator("modules")
    @classmethod
    def _module_names(cls, value: dict[str, ProbeModule]) -> dict[str, ProbeModule]:
        for name in value:
            if not is_valid_name(name):
                raise ValueError(f"module name {name[:40]!r}: use 1-63 letters, digits, '_', '-', '.' or ':'")
        return value

    @model_validator(mode="after")
    def _unique(self) -> Config:
        counts: dict[str, int] = {}
        for target in self.targets:
            counts[target.name] = counts.get(target.name, 0) + 1
        duplicates = sorted(name for name, count in counts.items() if count > 1)
        if duplicates:
            raise ValueError(f"duplicate target names: {', '.join(duplicates)}")
        return self

    @model_validator(mode="after")
    def _timeouts_inside_intervals(self) -> Config:
        """Each poll's requests end before the next poll is due. Reported where it can be fixed: at the
        target that set one of the two, else at [defaults]."""
        problems: list[tuple[str, str]] = []
        defaults = self.defaults
        if defaults.timeout >= defaults.interval:
            problems.append(
                ("defaults.timeout", f"must be shorter than the interval ({format_duration(defaults.interval)})")
            )
        for index, target in enumerate(self.targets):
            interval, timeout = self.interval_of(target), self.timeout_of(target)
            if timeout < interval or (target.interval is None and target.timeout is None):
                continue
            if target.timeout is not None:
                inherited = ", from [defaults]" if target.interval is None else ""
                problems.append((f"targets[{index}].timeout",
                                 f"must be shorter than the interval ({format_duration(interval)}{inherited})"))
            else:
                problems.append((f"targets[{index}].interval",
                                 f"must be longer than the timeout ({format_duration(timeout)}, from [defaults]): "
                                 "set this target's timeout"))
        if problems:
            raise PydanticCustomError(_LOCATED, "{problems}", {"problems": tuple(problems)})
        return self

    def interval_of(self, target: TargetConfig) -> float:
        return target.interval if target.interval is not None else self.defaults.interval

    def timeout_of(self, target: TargetConfig) -> float:
        return target.timeout if target.timeout is not None else self.defaults.timeout

    def stall_after_of(self, target: TargetConfig) -> float:
        return target.stall_after if target.stall_after is not None else self.defaults.stall_after

    def resolved_state_dir(self, env: Mapping[str, str] | None = None) -> Path:
        env = os.environ if env is None else env
        if self.state_dir is not None:
            return self.state_dir
        if env.get("STATE_DIRECTORY"):
            return Path(env["STATE_DIRECTORY"].split(":")[0])
        base = env.get("XDG_STATE_HOME") or str(Path(env.get("HOME", "/tmp")) / ".local" / "state")
        return Path(base) / "comfywatch"


def url_problem(url: str) -> str | None:
    """Why *url* cannot be a target's address, or None. The text never repeats the URL: it may hold a password."""
    if sanitize(url) != url:
        # Such a URL cannot be requested, and its text would reach the url label and every log line about it.
        return "contains control characters or invalid Unicode"
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed IPv6 bracket
        return "not a valid URL"
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return f"expected http:// or https:// with a host, e.g. {DEFAULT_LOCAL_URL}"
    try:
        _ = parts.port
    except ValueError:
        return "invalid port"
    try:
        # What the HTTP client will connect to: yarl refuses some hosts urlsplit accepts (a zero-width space,
        # an empty IDNA label), and a target that passed here must not fail only when its client is built.
        _ = URL(url_without_userinfo(url)).host
    except ValueError:  # UnicodeError included
        return "host is not a valid host name"
    return None


def target_from_url_option(url: str, kind: Literal["local", "cloud"] = "local", name: str | None = None
                           ) -> TargetConfig:
    """The target a command's ``--url`` names; a bad URL is a :class:`ConfigError` from the command line.

    The target is called *name*, else by its host when that is a valid target name, else ``url``.
    """
    problem = url_problem(url)
    if problem is not None:
        raise ConfigError([f"--url: {problem}"], "command line")
    host = urlsplit(url).hostname or ""
    return TargetConfig(name=name or (host if is_valid_name(host) else "url"), kind=kind, url=url)


def config_file(option: str | None, env: Mapping[str, str] | None = None) -> Path | None:
    """The config file a command reads: its ``--config``, else ``$COMFYWATCH_CONFIG``, else none (built-in)."""
    value = option or (os.environ if env is None else env).get("COMFYWATCH_CONFIG")
    return Path(value) if value else None


def validate_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Extra target labels: valid Prometheus names of at most 128 characters, not reserved, at most 16, values
    of at most 128 characters, made safe as a server's strings are (a label reaches every output: a terminal
    through the status API, a browser, the logs)."""
    if len(labels) > 16:
        raise ValueError("at most 16 extra labels per target")
    checked: dict[str, str] = {}
    for key, value in labels.items():
        if not _LABEL_NAME.fullmatch(key) or key.startswith("__") or len(key) > 128:
            raise ValueError(
                f"label name {key[:40]!r} is not a valid Prometheus label name of at most 128 characters"
            )
        if key in _RESERVED_LABELS:
            raise ValueError(f"label name {key!r} is reserved by comfywatch")
        if not isinstance(value, str) or len(clean_value := sanitize(value)) > 128:
            raise ValueError(f"label {key!r}: value must be a string of at most 128 characters")
        checked[key] = clean_value
    return checked


def strip_secrets_from_url(url: str) -> str:
    """Drop userinfo, query and fragment (``http://u:p@h:1/x?token=y`` -> ``http://h:1/x``)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<invalid url>"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


@dataclass(frozen=True)
class Credentials:
    """Secrets for one target, resolved from files/env at load time. ``repr`` never shows values."""

    headers: dict[str, str] = field(default_factory=dict, repr=False)
    basic_auth: tuple[str, str] | None = field(default=None, repr=False)
    api_key: str | None = field(default=None, repr=False)

    def secret_values(self) -> list[str]:
        values = list(self.headers.values())
        if self.basic_auth:
            # The password, not the user name: a name such as "monitor" would mask every log event naming a
            # monitor. The user:password pair stays masked through the URL and Basic shapes.
            values.append(self.basic_auth[1])
            # The value sent, so its bare base64 token is masked too when a server echoes it.
            values.append(basic_auth_header(*self.basic_auth))
        if self.api_key:
            values.append(self.api_key)
        return [v for v in values if v]


def read_bounded_bytes(path: Path, limit: int) -> bytes:
    """The bytes of *path*; ValueError with a one-line reason (never the content) when they cannot be had.

    Only a regular file is read, at most *limit* bytes of it: a FIFO (whose opening waits for a writer, and whose
    reading for its data), a device (``/dev/zero`` never ends) or a directory is refused without waiting.
    """
    try:
        # Non-blocking, so that opening a FIFO returns at once and fstat can refuse it.
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(descriptor, "rb") as file:
            status = os.fstat(descriptor)
            if not stat.S_ISREG(status.st_mode):
                raise ValueError("not a regular file")
            if status.st_size > limit:
                raise ValueError(f"larger than {format_size(limit)}")
            data = file.read(limit + 1)
    except OSError as exc:
        raise ValueError(exc.strerror or type(exc).__name__) from None
    if len(data) > limit:
        raise ValueError(f"larger than {format_size(limit)}")
    return data


def read_bounded_text(path: Path, limit: int) -> str:
    """The UTF-8 text of *path*, read as :func:`read_bounded_bytes` reads it; ValueError with a one-line reason
    (never the content) when it cannot be had."""
    data = read_bounded_bytes(path, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # The codec's message quotes the offending byte, which may be part of a secret.
        raise ValueError("not valid UTF-8") from None


def _ca_file_problem(path: Path) -> str | None:
    """Why *path* cannot be a target's CA file (no regular file of at most MAX_CA_FILE_BYTES, or none that ssl
    loads as the clients load it: by file name, comments and trusted-certificate blocks allowed), or None."""
    try:
        read_bounded_bytes(path, MAX_CA_FILE_BYTES)
    except ValueError as exc:
        return str(exc)
    try:
        ssl.create_default_context(cafile=str(path))
    except (ssl.SSLError, OSError, ValueError, TypeError):
        return "no PEM certificate ssl can load"
    return None


def _read_secret_file(path: Path, what: str) -> str:
    try:
        return read_bounded_text(path, MAX_SECRET_BYTES).strip()
    except ValueError as exc:
        raise ValueError(f"cannot read {what} {str(path)!r}: {exc}") from None


def parse_headers_file(text: str) -> dict[str, str]:
    """``Name: value`` per line, like ``curl -H @file``; blank lines and ``#`` comments skipped."""
    headers: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, sep, value = stripped.partition(":")
        if not sep or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name.strip()):
            raise ValueError(f"line {number}: expected 'Name: value'")
        headers[name.strip()] = _header_value(value.strip(), f"line {number}")
    return headers


# Control characters but the tab, which a header value may hold.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f]")


def _header_value(value: str, what: str) -> str:
    """*value*, which is sent as an HTTP header's, refused if it holds a line break or another control character:
    no request could carry it, and each would fail as if the server had answered badly."""
    if _CONTROL.search(value):
        raise ValueError(f"{what}: holds a line break or another control character (a header value is one line)")
    return value


def _env_key_name(target_name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", target_name.upper())


def _secret_headers(headers_file: Path | None, bearer_token_file: Path | None) -> dict[str, str]:
    """The headers of a headers_file and a bearer_token_file (a target's or a /probe module's)."""
    headers: dict[str, str] = {}
    if headers_file is not None:
        try:
            headers.update(parse_headers_file(_read_secret_file(headers_file, "headers_file")))
        except ValueError as exc:
            raise ValueError(f"headers_file: {exc}") from None
    if bearer_token_file is not None:
        token = _header_value(_read_secret_file(bearer_token_file, "bearer_token_file"), "bearer_token_file")
        headers["Authorization"] = f"Bearer {token}"
    return headers


def resolve_credentials(target: TargetConfig, env: Mapping[str, str] | None = None) -> Credentials:
    """Read every secret of *target*; raises ValueError with a message that never contains a secret."""
    env = os.environ if env is None else env
    headers = _secret_headers(target.headers_file, target.bearer_token_file)
    parts = urlsplit(target.url)
    basic: tuple[str, str] | None = None
    if parts.username is not None:
        basic = (unquote(parts.username), unquote(parts.password or ""))
    api_key: str | None = None
    if target.kind == "cloud":
        candidates: list[str | None] = []
        if target.api_key_file is not None:
            candidates.append(_read_secret_file(target.api_key_file, "api_key_file"))
        candidates.append(env.get(f"COMFYWATCH_TARGET_{_env_key_name(target.name)}_API_KEY"))
        candidates.append(env.get("COMFYWATCH_CLOUD_API_KEY"))
        creds_dir = env.get("CREDENTIALS_DIRECTORY")
        if creds_dir:
            credential = Path(creds_dir) / CREDENTIAL_NAME
            try:
                present = credential.is_file()
            except OSError:  # e.g. EACCES on the directory: let the read report it as a config problem
                present = True
            if present:
                candidates.append(_read_secret_file(credential, "credential"))
        if target.api_key is not None:
            candidates.append(target.api_key.get_secret_value())
        api_key = next((c for c in candidates if c), None)
        if api_key is not None:
            _header_value(api_key, "api key")
    return Credentials(headers=headers, basic_auth=basic, api_key=api_key)


def resolve_module_credentials(module: ProbeModule) -> Credentials:
    """The headers a ``/probe`` module sends; raises ValueError with a message that never contains a secret."""
    return Credentials(headers=_secret_headers(module.headers_file, module.bearer_token_file))


def url_without_userinfo(url: str) -> str:
    """The URL the HTTP client uses: userinfo removed (it travels as an Authorization header instead)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), parts.query, ""))


# ---------------------------------------------------------------------------------------------------------
# Loading.

_ENV_PREFIX = "COMFYWATCH_"
#: Environment variables that are not config paths.
_ENV_NOT_CONFIG = frozenset({"CONFIG", "LOG_LEVEL", "LOG_FORMAT", "CLOUD_API_KEY", "URL"})


def _env_overrides(env: Mapping[str, str]) -> list[tuple[list[str], Any]]:
    overrides: list[tuple[list[str], Any]] = []
    for key, raw in env.items():
        if not key.startswith(_ENV_PREFIX):
            continue
        rest = key[len(_ENV_PREFIX):]
        if rest in _ENV_NOT_CONFIG or rest.startswith("TARGET_") or "__" not in rest:
            continue
        path = [part.lower() for part in rest.split("__")]
        try:
            decoded: Any = json.loads(raw)
        except (ValueError, RecursionError):
            decoded = raw
        # Arrays, objects and quoted strings come from JSON. Numbers and booleans stay text, which
        # pydantic converts where a number or boolean belongs, so a string field still accepts "123".
        value = decoded if isinstance(decoded, dict | list | str) else raw
        overrides.append((path, value))
    return overrides


#: Highest list index an override may name: a typo such as ``TARGETS__10000000000__URL`` must not make
#: the loader build a list of ten billion tables.
_MAX_INDEX = 9_999


def _index(part: str) -> int:
    if not (part.isascii() and part.isdigit()) or int(part) > _MAX_INDEX:
        raise ValueError("list index out of range")
    return int(part)


def _apply(data: dict[str, Any], path: list[str], value: Any) -> None:
    node: Any = data
    for position, part in enumerate(path[:-1]):
        following = path[position + 1]
        if isinstance(node, list):
            index = _index(part)
            while len(node) <= index:
                node.append({})
            node = node[index]
            continue
        if part not in node or not isinstance(node[part], dict | list):
            node[part] = [] if following.isdigit() else {}
        node = node[part]
    last = path[-1]
    if isinstance(node, list):
        index = _index(last)
        while len(node) <= index:
            node.append({})
        node[index] = value
    else:
        node[last] = value


def _location(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in {"function-after", "function-before"} or part.startswith("function-"):
            continue
        else:
            text += f".{part}" if text else str(part)
    return text or "(top level)"


_SECRET_FIELDS = frozenset({"api_key"})


def _section_model(annotation: Any) -> Any:
    """The type a table of *annotation* holds: ``VerifyConfig | None`` -> VerifyConfig; other unions: None."""
    if get_origin(annotation) in (Union, types.UnionType):
        members = [a for a in get_args(annotation) if a is not type(None)]
        return members[0] if len(members) == 1 else None
    return annotation


def _known_keys(loc: Sequence[int | str]) -> list[str]:
    """The keys the table at *loc* accepts (``("targets", 0, "canary")`` -> CanaryConfig's fields)."""
    node: Any = Config
    for part in loc:
        if isinstance(node, type) and issubclass(node, BaseModel):
            field_info = node.model_fields.get(part) if isinstance(part, str) else None
            node = None if field_info is None else _section_model(field_info.annotation)
        elif get_origin(node) is tuple and isinstance(part, int):  # targets[0]
            node = _section_model(get_args(node)[0])
        elif get_origin(node) is dict and isinstance(part, str):  # modules.<name>
            node = _section_model(get_args(node)[1])
        else:
            return []
    return list(node.model_fields) if isinstance(node, type) and issubclass(node, BaseModel) else []


def _unknown_key(loc: Sequence[int | str]) -> str:
    known = _known_keys(loc[:-1])
    close = difflib.get_close_matches(str(loc[-1]), known, n=1) if loc else []
    if close:
        return f"unknown key — did you mean {close[0]!r}?"
    return f"unknown key (known keys: {', '.join(known)})" if known else "unknown key"


def _number(value: object) -> str:
    """A bound as people write it: ``1000000000``, not ``1000000000.0``."""
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


#: pydantic's bound errors in the words of the rest of the messages ("must be at least 1s").
_BOUND_MESSAGES = {
    "greater_than_equal": ("ge", "must be at least {}"),
    "greater_than": ("gt", "must be greater than {}"),
    "less_than_equal": ("le", "must be at most {}"),
    "less_than": ("lt", "must be less than {}"),
    "string_too_long": ("max_length", "must be at most {} characters"),
    "too_long": ("max_length", "must have at most {} entries"),
}
_FIXED_MESSAGES = {"finite_number": "must be a finite number"}


def _shown(value: object) -> str:
    """`` (got VALUE)`` for a short scalar that cannot hold a secret, else nothing."""
    if isinstance(value, int) and abs(value) >= 10**60:
        return ""  # str() of a 5000-digit integer raises, and it would not be read anyway
    # A URL's userinfo is a secret: never echo a value that could carry one.
    if isinstance(value, str | int | float | bool) and len(str(value)) <= 60 and "@" not in str(value):
        return f" (got {value!r})"
    return ""


def format_validation_error(error: ValidationError) -> list[str]:
    problems: list[str] = []
    for item in error.errors(include_url=False):
        ctx = item.get("ctx") or {}
        if item["type"] == _LOCATED:
            problems.extend(f"{location}: {message}" for location, message in ctx["problems"])
            continue
        loc = [p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] in _BOUND_MESSAGES:
            key, template = _BOUND_MESSAGES[item["type"]]
            message = template.format(_number(ctx[key]))
        message = _FIXED_MESSAGES.get(item["type"], message)
        if item["type"] == "extra_forbidden":
            # Only problems ConfigError prints get a suggestion: difflib for 300,000 keys takes minutes.
            message = _unknown_key(loc) if len(problems) < MAX_PROBLEMS else "unknown key"
        shown = ""
        if loc and loc[-1] not in _SECRET_FIELDS and item["type"] not in {"extra_forbidden", "missing"}:
            shown = _shown(item.get("input"))
        problems.append(f"{_location(loc)}: {message}{shown}")
    return problems


def _unencodable_strings(data: Any) -> list[str]:
    """Where *data* holds a string no UTF-8 encoder accepts (a lone surrogate): from the environment, which
    Python decodes with ``surrogateescape``, or from a JSON ``\\ud800`` escape. Such a string would make every
    label, log line or page that shows it fail to encode."""
    problems: list[str] = []
    stack: list[tuple[tuple[int | str, ...], Any]] = [((), data)]
    while stack:
        loc, node = stack.pop()
        children = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in children:
            # Locations are only built for containers and problems: a list of a million numbers costs little.
            if isinstance(key, str) and _SURROGATE.search(key) is not None:
                problems.append(f"{_location(loc)}: a key is not valid UTF-8")
            elif isinstance(value, dict | list):
                stack.append(((*loc, key), value))
            elif isinstance(value, str) and _SURROGATE.search(value) is not None:
                problems.append(f"{_location((*loc, key))}: not valid UTF-8")
    return sorted(problems)


def _read_toml(path: Path) -> dict[str, Any]:
    """The table of the file at *path*; ConfigError (one line, never the content) when there is none."""
    source = str(path)
    try:
        text = read_bounded_text(path, MAX_CONFIG_BYTES)
    except ValueError as exc:
        problem = "file is not valid UTF-8" if str(exc) == "not valid UTF-8" else f"cannot read file: {exc}"
        raise ConfigError([problem], source) from None
    if (long_key := dotted_line_problem(text)) is not None:
        raise ConfigError([f"invalid TOML: {long_key}"], source)
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise ConfigError(["invalid TOML: nested too deeply"], source) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"invalid TOML: {exc}"], source) from None
    except ValueError:  # tomllib lets int() refuse decimal integers longer than the interpreter's limit
        raise ConfigError([f"invalid TOML: an integer has more than {sys.get_int_max_str_digits()} digits"],
                          source) from None


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load and validate the configuration; raises :class:`ConfigError` with every problem found.

    Order of precedence: environment (``COMFYWATCH_SECTION__KEY``) over the file over defaults.
    ``COMFYWATCH_URL`` replaces the default local target when the file defines none.
    Nothing but a :class:`ConfigError` ever escapes: ``check-config`` exits 2 on it, and a reload keeps the
    running configuration.
    """
    source = str(path) if path is not None else "environment"
    try:
        return _load(path, os.environ if env is None else env, source)
    except ConfigError:
        raise
    except RecursionError:
        raise ConfigError(["invalid configuration: nested too deeply"], source) from None
    except Exception as exc:  # a defect of the loader: still one line, never a traceback
        raise ConfigError([f"invalid configuration ({type(exc).__name__})"], source) from None


def _load(path: Path | None, env: Mapping[str, str], source: str) -> Config:
    data = _read_toml(path) if path is not None else {}
    try:
        for key_path, value in _env_overrides(env):
            _apply(data, key_path, value)
    except (ValueError, TypeError, IndexError):
        raise ConfigError(["invalid COMFYWATCH_* override path"], source) from None
    unencodable = _unencodable_strings(data)
    if unencodable:
        raise ConfigError(unencodable, source)
    discovery = data.get("discovery")
    discovery_files = discovery.get("files") if isinstance(discovery, dict) else None
    if not data.get("targets") and not discovery_files:
        url = env.get("COMFYWATCH_URL", DEFAULT_LOCAL_URL)
        data["targets"] = [{"name": "local", "kind": "local", "url": url}]
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc), source) from None
    problems: list[str] = []
    ca_problems: dict[Path, str | None] = {}  # a fleet shares one CA file: each is loaded once
    for index, target in enumerate(config.targets):
        try:
            resolve_credentials(target, env)
        except ValueError as exc:
            problems.append(f"targets[{index}]: {exc}")
        if target.tls_ca_file is not None:
            if target.tls_ca_file not in ca_problems:
                ca_problems[target.tls_ca_file] = _ca_file_problem(target.tls_ca_file)
            if (ca_problem := ca_problems[target.tls_ca_file]) is not None:
                problems.append(f"targets[{index}]: cannot load tls_ca_file {str(target.tls_ca_file)!r}: {ca_problem}")
    for name, module in config.modules.items():
        try:
            resolve_module_credentials(module)
        except ValueError as exc:
            problems.append(f"modules.{name}: {exc}")
    if problems:
        raise ConfigError(problems, source)
    return config


def quote_userinfo(user: str, password: str) -> str:
    """Build ``user:pass`` userinfo safely (used by tests and doctor's URL handling)."""
    return f"{quote(user, safe='')}:{quote(password, safe='')}"
