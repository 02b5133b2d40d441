"""Fuzzing the core pure modules: only their documented exceptions may ever come out.

* Parsers: arbitrary JSON (NaN, Infinity, huge integers included) and mutated recordings -> ParseError only.
* Config: arbitrary TOML-ish documents, arbitrary bytes and arbitrary COMFYWATCH_* environments ->
  ConfigError only, and a secret placed in the config never shows up in the error text.
* Durations, classifiers and the renderer: total functions over their input types.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families as parse_text

from comfywatch.config import Config, ConfigError, load_config
from comfywatch.config.durations import parse_duration, parse_size
from comfywatch.errors import Failure, ParseError, Reason, classify_execution_error, classify_status, parse_retry_after
from comfywatch.export.exposition import Family, MetricDef, render
from comfywatch.parse.canary_events import PromptFollower
from comfywatch.parse.history import parse_history, parse_history_entry
from comfywatch.parse.jobs import parse_jobs
from comfywatch.parse.prompt import parse_prompt_accepted, parse_ws_text
from comfywatch.parse.queue import parse_queue, parse_queue_remaining
from comfywatch.parse.system import parse_system_stats
from tests.fixtures import FIXTURES, load_json, load_jsonl
from tests.strategies import FUZZ, json_trees

#: Each config example writes a file and runs pydantic: fewer of them keeps the suite fast.
CONFIG_FUZZ = settings(FUZZ, max_examples=80)
SECRET = "sk-fuzz-5e3cr3t-9b1d"

# ---------------------------------------------------------------------------------------------------------
# JSON values, as json.loads can produce them (it accepts NaN/Infinity and keeps big integers exact).

json_values = json_trees(key_size=10, leaves=25)
edge_values: st.SearchStrategy[Any] = st.sampled_from(
    [
        None,
        "",
        "x" * 300,
        0,
        -1,
        1.5,
        10**400,
        -(10**400),
        math.nan,
        math.inf,
        -math.inf,
        True,
        False,
        [],
        {},
        [[]],
        {"": {}},
    ]
)
replacements = edge_values | json_values

Parser = Callable[[Any], object]
PARSERS: dict[str, Parser] = {
    "system_stats": parse_system_stats,
    "queue": parse_queue,
    "queue_remaining": parse_queue_remaining,
    "history": parse_history,
    "history_entry": lambda body: parse_history_entry("p", body),
    "jobs": parse_jobs,
    "prompt_accepted": parse_prompt_accepted,
}

JOBS_BODY = {
    "jobs": [
        {
            "id": "a",
            "status": "completed",
            "create_time": 1795641031000,
            "execution_start_time": 1795641031630,
            "execution_end_time": 1795641031637,
            "execution_error": None,
            "outputs_count": 1,
        },
        {
            "id": "b",
            "status": "failed",
            "create_time": 1795641031.5,
            "execution_error": {
                "exception_type": "torch.OutOfMemoryError",
                "exception_message": "Allocation on device",
            },
        },
        {"id": "c", "status": "in_progress", "create_time": 1795641032000},
    ],
    "pagination": {"offset": 0, "limit": 100, "total": 3, "has_more": False},
}


def _fixtures(pattern: str) -> list[Any]:
    return [load_json(p.name) for p in sorted(FIXTURES.glob(pattern))]


SEEDS: list[tuple[str, Any]] = [
    *(("system_stats", b) for b in _fixtures("system_stats*.json")),
    ("system_stats", load_json("alt_tls_cors_multiuser_system_stats.json")),
    *(("queue", b) for b in _fixtures("queue_*.json")),
    *(("queue_remaining", b) for b in _fixtures("prompt_get_*.json")),
    *(("history", b) for b in _fixtures("history_*.json") if b),
    ("history_entry", next(iter(load_json("history_error_runtime.json").values()))),
    ("history_entry", next(iter(load_json("history_interrupted.json").values()))),
    ("jobs", JOBS_BODY),
    *(("prompt_accepted", b) for b in _fixtures("prompt_ok_*.json")),
]
WS_FRAMES = [f["msg"] for p in sorted(FIXTURES.glob("ws_*.jsonl")) for f in load_jsonl(p.name) if f["kind"] == "text"]


def _slots(value: Any) -> Iterator[tuple[Any, Any]]:
    """Every (container, key) pair inside a JSON value."""
    if isinstance(value, dict):
        for key in list(value):
            yield value, key
            yield from _slots(value[key])
    elif isinstance(value, list):
        for index in range(len(value)):
            yield value, index
            yield from _slots(value[index])


@st.composite
def mutated(draw: st.DrawFn, body: Any) -> Any:
    """*body* with 1-4 random slots replaced, deleted or wrapped."""
    body = copy.deepcopy(body)
    slots = list(_slots(body))
    if not slots:
        return draw(replacements)
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        container, key = draw(st.sampled_from(slots))
        action = draw(st.sampled_from(["replace", "delete", "wrap", "stringify"]))
        try:
            if action == "replace":
                container[key] = draw(replacements)
            elif action == "delete":
                del container[key]
            elif action == "wrap":
                container[key] = [container[key]]
            else:
                container[key] = json.dumps(container[key], allow_nan=True)
        except (KeyError, IndexError):
            pass  # an earlier mutation already removed this slot
    return body


extreme_numbers = st.sampled_from([10**400, -(10**400), math.nan, math.inf, -math.inf, 1e308, -1, 0, 2**63, 0.5])


@st.composite
def numbers_replaced(draw: st.DrawFn, body: Any) -> Any:
    """*body* with some of its numbers (timestamps, counts, ids) swapped for extreme values."""

    def walk(value: Any) -> Any:
        if isinstance(value, bool):
            return value
        if isinstance(value, int | float):
            return draw(extreme_numbers) if draw(st.booleans()) else value
        if isinstance(value, list):
            return [walk(item) for item in value]
        if isinstance(value, dict):
            return {key: walk(item) for key, item in value.items()}
        return value

    return walk(body)


def only_parse_error(parser: Parser, body: Any) -> None:
    with contextlib.suppress(ParseError):
        parser(body)


class TestParsersFuzz:
    @FUZZ
    @given(st.sampled_from(sorted(PARSERS)), json_values)
    def test_arbitrary_json(self, name: str, body: Any) -> None:
        """Any JSON value into any parser gives a result or ParseError, nothing else."""
        only_parse_error(PARSERS[name], body)

    @FUZZ
    @given(st.data())
    def test_mutated_recordings(self, data: st.DataObject) -> None:
        """Recorded bodies with random slots replaced, deleted or wrapped give a result or ParseError."""
        name, seed = data.draw(st.sampled_from(SEEDS))
        only_parse_error(PARSERS[name], data.draw(mutated(seed)))

    @FUZZ
    @given(st.data())
    def test_extreme_numbers_in_recordings(self, data: st.DataObject) -> None:
        """NaN, Infinity and 400-digit integers (all valid for json.loads) anywhere give a result or ParseError."""
        name, seed = data.draw(st.sampled_from(SEEDS))
        body = data.draw(numbers_replaced(seed))
        only_parse_error(PARSERS[name], body)
        with contextlib.suppress(ParseError):
            for entry in parse_history(body) if name == "history" else ():
                assert entry.server_seconds is None or entry.server_seconds == entry.server_seconds

    @FUZZ
    @given(st.sampled_from(WS_FRAMES), st.data())
    def test_extreme_numbers_in_frames(self, frame: dict[str, Any], data: st.DataObject) -> None:
        """Recorded frames with extreme numbers parse (or raise ParseError) and never break a follower."""
        text = json.dumps(data.draw(numbers_replaced(frame)), allow_nan=True)
        with contextlib.suppress(ParseError):
            event = parse_ws_text(text)
            follower = PromptFollower(event.prompt_id or "p")
            follower.feed(event, 0.0)
            assert follower.server_seconds is None or follower.server_seconds == follower.server_seconds

    @FUZZ
    @given(st.sampled_from(sorted(PARSERS)), st.dictionaries(st.text(max_size=10), json_values, max_size=6))
    def test_arbitrary_objects(self, name: str, body: dict[str, Any]) -> None:
        """Objects with arbitrary keys (the usual shape of a wrong answer) give a result or ParseError."""
        only_parse_error(PARSERS[name], body)

    @FUZZ
    @given(st.text())
    def test_ws_arbitrary_text(self, text: str) -> None:
        """Any text frame gives an event or ParseError."""
        only_parse_error(parse_ws_text, text)

    @FUZZ
    @given(json_values)
    def test_ws_arbitrary_json(self, value: Any) -> None:
        """Any JSON document as a frame (NaN and Infinity included) gives an event or ParseError."""
        only_parse_error(parse_ws_text, json.dumps(value, allow_nan=True))

    @FUZZ
    @given(st.data())
    def test_ws_mutated_frames(self, data: st.DataObject) -> None:
        """Recorded frames with random mutations give an event or ParseError."""
        frame = data.draw(mutated(data.draw(st.sampled_from(WS_FRAMES))))
        only_parse_error(parse_ws_text, json.dumps(frame, allow_nan=True))

    @pytest.mark.parametrize(("name", "body"), SEEDS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(SEEDS)])
    def test_seeds_parse(self, name: str, body: Any) -> None:
        """The unmutated seeds parse (so mutations start from valid inputs)."""
        PARSERS[name](body)


# ---------------------------------------------------------------------------------------------------------
# Config: a small TOML writer (inline tables and arrays only) for generated documents.


def toml_string(text: str) -> str:
    out = []
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return toml_string(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{toml_string(k)} = {toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def toml_document(data: dict[str, Any]) -> str:
    return "".join(f"{toml_string(key)} = {toml_value(value)}\n" for key, value in data.items())


toml_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=20)
toml_scalars = (
    st.booleans() | st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.floats(allow_nan=True) | toml_text
)


def toml_tree(leaves: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.recursive(
        leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(toml_text, inner, max_size=3), max_leaves=10
    )


toml_values = toml_tree(toml_scalars)
durations = st.sampled_from(["15s", "1h30m", "500ms", "0", "abc", "-5s", "366d", "", "9" * 400]) | toml_scalars
sizes = st.sampled_from(["16MiB", "2GB", "0", "1.5KiB", "-1", "9" * 400, "16 TB"]) | toml_scalars
urls = st.sampled_from(
    [
        "http://127.0.0.1:8188",
        "https://cloud.comfy.org",
        f"http://admin:{SECRET}@127.0.0.1:8188",
        f"ftp://admin:{SECRET}@h",
        f"http://admin:{SECRET}@h:99999",
        "http://[::1",
        "",
        "http://",
        "http://h/p?q=1",
    ]
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually *strategy*, sometimes any TOML value (a wrong type)."""
    return strategy | toml_values


canary = st.fixed_dictionaries(
    {},
    optional={
        "enabled": maybe(st.booleans()),
        "workflow": maybe(st.sampled_from(["builtin:preview-image", "/x.json"])),
        "interval": durations,
        "timeout": durations,
        "when_busy": maybe(st.sampled_from(["skip", "queue", "wait"])),
        "max_runs_per_day": maybe(st.integers(-5, 200_000)),
        "name": toml_text,
        "verify": maybe(
            st.fixed_dictionaries(
                {}, optional={"images": st.integers(-1, 3), "text_matches": toml_text, "any_output": st.booleans()}
            )
        ),
    },
)
target = st.fixed_dictionaries(
    {},
    optional={
        "name": maybe(st.sampled_from(["local", "cloud", "gpu-1", "a b", "", "x" * 70])),
        "kind": maybe(st.sampled_from(["local", "cloud", "remote"])),
        "url": maybe(urls),
        "interval": durations,
        "timeout": durations,
        "stall_after": durations,
        "api_key": st.just(SECRET) | st.just([SECRET]) | st.just({"k": SECRET}),
        "allow_plaintext_api_key": maybe(st.booleans()),
        "api_key_file": st.sampled_from(["/nonexistent/comfywatch-key", ""]),
        "headers_file": st.sampled_from(["/nonexistent/comfywatch-headers"]),
        "labels": maybe(
            st.dictionaries(
                st.sampled_from(["rack", "target", "__x", "1a", "team"]) | toml_text,
                toml_text | st.integers(),
                max_size=4,
            )
        ),
        "checks": maybe(st.lists(toml_text, max_size=3)),
        "balance_divisor": maybe(st.floats(allow_nan=True)),
        "canary": maybe(canary),
        "intervall": toml_values,
    },
)
config_documents = st.fixed_dictionaries(
    {},
    optional={
        "server": maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "listen": maybe(
                        st.sampled_from(["127.0.0.1:9877", "0.0.0.0:9100", "9877", ":1", "[::1]:9877", "h:70000"])
                    ),
                    "shard": maybe(st.sampled_from(["0/1", "2/3", "3/3", "x"])),
                    "max_concurrency": maybe(st.integers(-1, 20_000)),
                },
            )
        ),
        "defaults": maybe(
            st.fixed_dictionaries(
                {},
                optional={
                    "interval": durations,
                    "timeout": durations,
                    "stall_after": durations,
                    "max_body_size": sizes,
                    "worker_idle_polls": maybe(st.integers(-1, 2000)),
                },
            )
        ),
        "targets": maybe(st.lists(target | urls, max_size=3)),
        "discovery": maybe(
            st.fixed_dictionaries(
                {}, optional={"files": maybe(st.lists(toml_text, max_size=2)), "refresh_interval": durations}
            )
        ),
        "modules": maybe(
            st.dictionaries(
                toml_text,
                st.fixed_dictionaries(
                    {},
                    optional={
                        "kind": maybe(st.sampled_from(["local", "cloud"])),
                        "timeout": durations,
                        "checks": maybe(st.lists(st.sampled_from(["system", "queue", "jobs", "canary"]), max_size=3)),
                    },
                ),
                max_size=2,
            )
        ),
        "state_dir": maybe(toml_text),
    },
) | st.dictionaries(toml_text, toml_values, max_size=4)

env_keys = st.sampled_from(
    [
        "COMFYWATCH_SERVER__LISTEN",
        "COMFYWATCH_SERVER__SHARD",
        "COMFYWATCH_DEFAULTS__INTERVAL",
        "COMFYWATCH_DEFAULTS__MAX_BODY_SIZE",
        "COMFYWATCH_TARGETS__0__NAME",
        "COMFYWATCH_TARGETS__0__URL",
        "COMFYWATCH_TARGETS__1__KIND",
        "COMFYWATCH_TARGETS__0__LABELS__RACK",
        "COMFYWATCH_TARGETS__0__CHECKS",
        "COMFYWATCH_TARGETS__X__URL",
        "COMFYWATCH_TARGETS__99999999999__URL",
        "COMFYWATCH_TARGETS__0__CANARY__ENABLED",
        "COMFYWATCH_DISCOVERY__FILES",
        "COMFYWATCH_MODULES__GPU__TIMEOUT",
        "COMFYWATCH_URL",
        "COMFYWATCH___",
        "COMFYWATCH_SERVER__",
        "COMFYWATCH_A__B__C__D",
        "COMFYWATCH_CLOUD_API_KEY",
    ]
) | st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_", max_size=30).map(lambda k: "COMFYWATCH_" + k)
env_values = st.sampled_from(
    [
        "15s",
        "true",
        "1",
        "[]",
        "{}",
        '["system"]',
        '{"a": 1}',
        "null",
        "1e400",
        "9" * 400,
        "[" * 2000,
        "http://127.0.0.1:8188",
        "0/1",
    ]
) | st.text(max_size=30)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz-config")


def only_config_error(path: Path | None, env: dict[str, str]) -> None:
    try:
        config = load_config(path, env)
    except ConfigError as exc:
        assert exc.problems
        assert SECRET not in str(exc)
    else:
        assert isinstance(config, Config)


class TestConfigFuzz:
    @FUZZ
    @given(st.dictionaries(toml_text, toml_tree(toml_scalars.filter(lambda v: v == v)), max_size=4))
    def test_toml_writer_round_trips(self, data: dict[str, Any]) -> None:
        """The test's TOML writer produces what tomllib reads back (so the fuzzing reaches validation)."""
        assert tomllib.loads(toml_document(data)) == data

    @CONFIG_FUZZ
    @given(config_documents)
    def test_arbitrary_documents(self, workdir: Path, data: dict[str, Any]) -> None:
        """Any TOML document loads or fails with ConfigError, and never echoes the secret."""
        path = workdir / "fuzz.toml"
        path.write_text(toml_document(data), encoding="utf-8")
        only_config_error(path, {})

    @FUZZ
    @given(st.binary(max_size=300) | st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")))
    def test_arbitrary_bytes(self, workdir: Path, content: bytes) -> None:
        """Any bytes as the config file load or fail with ConfigError."""
        path = workdir / "bytes.toml"
        path.write_bytes(content)
        only_config_error(path, {})

    @FUZZ
    @given(st.dictionaries(env_keys, env_values, max_size=5))
    def test_arbitrary_environment(self, env: dict[str, str]) -> None:
        """Any COMFYWATCH_* environment loads or fails with ConfigError."""
        only_config_error(None, env)

    @CONFIG_FUZZ
    @given(config_documents, st.dictionaries(env_keys, env_values, max_size=3))
    def test_documents_with_environment(self, workdir: Path, data: dict[str, Any], env: dict[str, str]) -> None:
        """Overrides applied on top of any document still give a Config or ConfigError."""
        path = workdir / "both.toml"
        path.write_text(toml_document(data), encoding="utf-8")
        only_config_error(path, env)


# ---------------------------------------------------------------------------------------------------------
# Total functions.


class TestTotalFunctions:
    @FUZZ
    @given(json_values)
    def test_durations_and_sizes(self, value: Any) -> None:
        """parse_duration/parse_size return a bounded number or raise ValueError (pydantic relies on that)."""
        try:
            seconds = parse_duration(value)
        except ValueError:
            pass
        else:
            assert 0 <= seconds <= 365 * 86400
        try:
            size = parse_size(value)
        except ValueError:
            pass
        else:
            assert size > 0

    @FUZZ
    @given(st.integers(min_value=-1000, max_value=1000), json_values, st.none() | st.text(max_size=20))
    def test_classify_status(self, status: int, body: Any, retry_after: str | None) -> None:
        """classify_status never raises: None for 2xx, otherwise a Failure with a bounded Retry-After."""
        failure = classify_status(status, body, retry_after)
        if 200 <= status < 300:
            assert failure is None
        else:
            assert isinstance(failure, Failure) and failure.reason in set(Reason)
            assert failure.retry_after is None or 0 <= failure.retry_after <= 3600

    @FUZZ
    @given(st.text(max_size=30))
    def test_retry_after(self, header: str) -> None:
        """Any Retry-After header gives None or 0..3600 seconds."""
        seconds = parse_retry_after(header)
        assert seconds is None or 0 <= seconds <= 3600

    @FUZZ
    @given(st.none() | st.text(max_size=50), st.none() | st.text(max_size=5000))
    def test_classify_execution_error(self, exception_type: str | None, message: str | None) -> None:
        """Any exception type/message pair maps to one of the three job-failure reasons."""
        assert classify_execution_error(exception_type, message) in {Reason.OOM, Reason.PAYMENT, Reason.EXECUTION_ERROR}

    @FUZZ
    @given(
        st.lists(st.integers(min_value=-(2**70), max_value=2**70) | st.floats(allow_nan=True), min_size=1, max_size=5)
    )
    def test_rendered_values_parse(self, values: list[float | int]) -> None:
        """Any int or float value renders to text both prometheus_client parsers read back."""
        family = Family(MetricDef("comfyui_x", "gauge", "x", ("i",)))
        for index, value in enumerate(values):
            family.add(f'i="{index}"', value)
        for openmetrics, parse in ((False, parse_text), (True, parse_openmetrics)):
            (parsed,) = parse(render([family], openmetrics=openmetrics).decode())
            for value, sample in zip(values, parsed.samples, strict=True):
                assert sample.value == value or (math.isnan(value) and math.isnan(sample.value))


@pytest.mark.skipif(not os.environ.get("COMFYWATCH_FUZZ_DEEP"), reason="set COMFYWATCH_FUZZ_DEEP=1 for a long run")
class TestDeep:
    @settings(deadline=None, max_examples=5000, suppress_health_check=list(HealthCheck))
    @given(st.data())
    def test_mutated_recordings_long(self, data: st.DataObject) -> None:
        """A long mutation run over every recording (opt-in; minutes)."""
        name, seed = data.draw(st.sampled_from(SEEDS))
        only_parse_error(PARSERS[name], data.draw(mutated(seed)))

    @settings(deadline=None, max_examples=2000, suppress_health_check=list(HealthCheck))
    @given(config_documents, st.dictionaries(env_keys, env_values, max_size=3))
    def test_config_long(self, workdir: Path, data: dict[str, Any], env: dict[str, str]) -> None:
        """A long config run (opt-in; minutes)."""
        path = workdir / "deep.toml"
        path.write_text(toml_document(data), encoding="utf-8")
        only_config_error(path, env)
