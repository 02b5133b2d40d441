"""Configuration: a TOML file, ``COMFYWATCH_*`` environment overrides and secret files.

No file at all gives one local target ``http://127.0.0.1:8188`` and a listener on ``127.0.0.1:9877``.
Unknown keys are errors so that a typo (``intervall``) never passes silently: the message names the closest
known key. Errors are reported as ``targets[1].interval: invalid duration ...`` lines; secret values are
never echoed.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
import types
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from comfywatch.durations import parse_duration, parse_size

__all__ = [
    "DEFAULT_LISTEN",
    "DEFAULT_LOCAL_URL",
    "CanaryConfig",
    "Config",
    "ConfigError",
    "Credentials",
    "ProbeModule",
    "TargetConfig",
    "config_file",
    "load_config",
    "resolve_credentials",
    "target_from_url_option",
    "url_problem",
]

DEFAULT_LISTEN = "127.0.0.1:9877"
DEFAULT_LOCAL_URL = "http://127.0.0.1:8188"
DEFAULT_CLOUD_URL = "https://cloud.comfy.org"
CREDENTIAL_NAME = "comfywatch_cloud_api_key"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,62}$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")
_RESERVED_LABELS = frozenset(
    {"target", "job", "instance", "__name__", "reason", "endpoint", "canary", "phase"}
)

Duration = Annotated[float, BeforeValidator(parse_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` holds one ``location: message`` line per problem."""

    def __init__(self, problems: Sequence[str], source: str = "config") -> None:
        self.problems = list(problems)
        self.source = source
        super().__init__("\n".join(f"{source}: {p}" for p in self.problems))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    listen: str = DEFAULT_LISTEN
    #: Prometheus exporter-toolkit web-config.yml (TLS + basic auth for /metrics).
    web_config_file: Path | None = None
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
        match = re.fullmatch(r"(\d+)/(\d+)", value.strip())
        if not match or int(match.group(2)) < 1 or int(match.group(1)) >= int(match.group(2)):
            raise ValueError('expected "i/N" with 0 <= i < N, e.g. "0/3"')
        return value.strip()

    @property
    def shard_index(self) -> int:
        return int(self.shard.split("/")[0])

    @property
    def shard_count(self) -> int:
        return int(self.shard.split("/")[1])


class Defaults(_Strict):
    interval: Duration = 15.0
    timeout: Duration = 5.0
    stall_after: Duration = 600.0
    #: Hard cap on any response body: a 2 GB answer must not be read into memory.
    max_body_size: Size = 32 * 2**20
    #: Consecutive polls with pending > 0 and nothing running before the worker counts as not consuming.
    worker_idle_polls: int = Field(default=4, ge=1, le=1000)
    #: Keep a WebSocket open to each local target: detects a dead server within a second and sees progress.
    websocket_monitor: bool = True


class VerifyConfig(_Strict):
    """What a user canary's output must look like."""

    images: int | None = Field(default=None, ge=0)
    text_matches: str | None = None
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
    workflow: str = "builtin:preview-image"
    name: str | None = None
    interval: Duration = 60.0
    timeout: Duration = 120.0
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
    url: str = ""
    interval: Duration | None = None
    timeout: Duration | None = None
    stall_after: Duration | None = None
    headers_file: Path | None = None
    bearer_token_file: Path | None = None
    api_key_file: Path | None = None
    #: Plain-text key in the TOML: refused unless allow_plaintext_api_key says the user insists.
    api_key: SecretStr | None = None
    allow_plaintext_api_key: bool = False
    balance_divisor: float = Field(default=100.0, gt=0)
    max_requests_per_minute: int = Field(default=60, ge=1, le=100_000)
    tls_ca_file: Path | None = None
    tls_insecure_skip_verify: bool = False
    labels: dict[str, str] = Field(default_factory=dict)
    checks: tuple[Literal["system", "queue", "jobs"], ...] | None = None
    canary: CanaryConfig = Field(default_factory=CanaryConfig)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("use 1-63 letters, digits, '_', '-', '.' or ':' (it becomes the target label)")
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        return validate_labels(value)

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


class ProbeModule(_Strict):
    """A ``/probe?module=`` definition (blackbox_exporter style)."""

    kind: Literal["local", "cloud"] = "local"
    timeout: Duration = 5.0
    headers_file: Path | None = None
    bearer_token_file: Path | None = None
    checks: tuple[Literal["system", "queue", "jobs"], ...] = ("system", "queue")


class DiscoveryConfig(_Strict):
    files: tuple[str, ...] = ()
    refresh_interval: Duration = 30.0
    #: Defaults applied to discovered targets (kind, canary, stall_after ...).
    kind: Literal["local", "cloud"] = "local"
    canary: CanaryConfig = Field(default_factory=lambda: CanaryConfig(enabled=False))


class Config(_Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    defaults: Defaults = Field(default_factory=Defaults)
    targets: tuple[TargetConfig, ...] = ()
    discovery: DiscoveryConfig = Field(default_factory=DiscoveryConfig)
    modules: dict[str, ProbeModule] = Field(default_factory=lambda: {"local": ProbeModule()})
    state_dir: Path | None = None

    @model_validator(mode="after")
    def _unique(self) -> Config:
        names = [t.name for t in self.targets]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"duplicate target names: {', '.join(duplicates)}")
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
    return TargetConfig(name=name or (host if _NAME.match(host) else "url"), kind=kind, url=url)


def config_file(option: str | None, env: Mapping[str, str] | None = None) -> Path | None:
    """The config file a command reads: its ``--config``, else ``$COMFYWATCH_CONFIG``, else none (built-in)."""
    value = option or (os.environ if env is None else env).get("COMFYWATCH_CONFIG")
    return Path(value) if value else None


def validate_labels(labels: Mapping[str, str]) -> dict[str, str]:
    """Extra target labels: valid Prometheus names, not reserved, bounded in count and length."""
    if len(labels) > 16:
        raise ValueError("at most 16 extra labels per target")
    clean: dict[str, str] = {}
    for key, value in labels.items():
        if not _LABEL_NAME.match(key) or key.startswith("__"):
            raise ValueError(f"label name {key[:40]!r} is not a valid Prometheus label name")
        if key in _RESERVED_LABELS:
            raise ValueError(f"label name {key!r} is reserved by comfywatch")
        if not isinstance(value, str) or len(value) > 128:
            raise ValueError(f"label {key!r}: value must be a string of at most 128 characters")
        clean[key] = value
    return clean


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
            values.append(self.basic_auth[1])
            values.append(self.basic_auth[0])
        if self.api_key:
            values.append(self.api_key)
        return [v for v in values if v]


def _read_secret_file(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ValueError(f"cannot read {what} {str(path)!r}: {exc.strerror or type(exc).__name__}") from None
    except UnicodeDecodeError:
        # The codec's message quotes the offending byte, which is part of the secret.
        raise ValueError(f"cannot read {what} {str(path)!r}: not valid UTF-8") from None


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
        headers[name.strip()] = value.strip()
    return headers


def _env_key_name(target_name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", target_name.upper())


def resolve_credentials(target: TargetConfig, env: Mapping[str, str] | None = None) -> Credentials:
    """Read every secret of *target*; raises ValueError with a message that never contains a secret."""
    env = os.environ if env is None else env
    headers: dict[str, str] = {}
    if target.headers_file is not None:
        try:
            headers.update(parse_headers_file(_read_secret_file(target.headers_file, "headers_file")))
        except ValueError as exc:
            raise ValueError(f"headers_file: {exc}") from None
    if target.bearer_token_file is not None:
        token = _read_secret_file(target.bearer_token_file, "bearer_token_file")
        headers["Authorization"] = f"Bearer {token}"
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
    return Credentials(headers=headers, basic_auth=basic, api_key=api_key)


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


def format_validation_error(error: ValidationError) -> list[str]:
    problems = []
    for item in error.errors(include_url=False):
        loc = [p for p in item["loc"] if not (isinstance(p, str) and p.startswith("function-"))]
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = _unknown_key(loc)
        shown = ""
        if loc and loc[-1] not in _SECRET_FIELDS and item["type"] not in {"extra_forbidden", "missing"}:
            value = item.get("input")
            # A URL's userinfo is a secret: never echo a value that could carry one.
            scalar = isinstance(value, str | int | float | bool)
            if scalar and len(str(value)) <= 60 and "@" not in str(value):
                shown = f" (got {value!r})"
        problems.append(f"{_location(loc)}: {message}{shown}")
    return problems


def load_config(path: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """Load and validate the configuration; raises :class:`ConfigError` with every problem found.

    Order of precedence: environment (``COMFYWATCH_SECTION__KEY``) over the file over defaults.
    ``COMFYWATCH_URL`` replaces the default local target when the file defines none.
    """
    env = os.environ if env is None else env
    source = str(path) if path is not None else "environment"
    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except RecursionError:
            raise ConfigError(["invalid TOML: nested too deeply"], source) from None
        except OSError as exc:
            raise ConfigError([f"cannot read file: {exc.strerror or type(exc).__name__}"], source) from None
        except UnicodeDecodeError:
            raise ConfigError(["file is not valid UTF-8"], source) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"invalid TOML: {exc}"], source) from None
    try:
        for key_path, value in _env_overrides(env):
            _apply(data, key_path, value)
    except (ValueError, TypeError, IndexError):
        raise ConfigError(["invalid COMFYWATCH_* override path"], source) from None
    discovery = data.get("discovery")
    discovery_files = discovery.get("files") if isinstance(discovery, dict) else None
    if not data.get("targets") and not discovery_files:
        url = env.get("COMFYWATCH_URL", DEFAULT_LOCAL_URL)
        data["targets"] = [{"name": "local", "kind": "local", "url": url}]
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc), source) from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise ConfigError([f"invalid configuration: {type(exc).__name__}"], source) from None
    problems: list[str] = []
    for index, target in enumerate(config.targets):
        try:
            resolve_credentials(target, env)
        except ValueError as exc:
            problems.append(f"targets[{index}]: {exc}")
    if problems:
        raise ConfigError(problems, source)
    return config


def quote_userinfo(user: str, password: str) -> str:
    """Build ``user:pass`` userinfo safely (used by tests and doctor's URL handling)."""
    return f"{quote(user, safe='')}:{quote(password, safe='')}"
