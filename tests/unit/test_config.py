"""Tests for comfywatch.config: TOML + COMFYWATCH_* overrides + secrets, and the error messages users read."""

from __future__ import annotations

import time
from pathlib import Path
from urllib.parse import quote

import pytest
from pydantic import ValidationError

from comfywatch.basic_auth import basic_auth_header
from comfywatch.config import (
    CREDENTIAL_NAME,
    DEFAULT_CLOUD_URL,
    DEFAULT_LISTEN,
    DEFAULT_LOCAL_URL,
    Config,
    ConfigError,
    Credentials,
    TargetConfig,
    WorkflowWatch,
    config_file,
    load_config,
    parse_headers_file,
    quote_userinfo,
    resolve_credentials,
    strip_secrets_from_url,
    target_from_url_option,
    url_without_userinfo,
    validate_labels,
)
from comfywatch.redact import SecretRegistry

SECRET = "sk-live-7f3a9c0e1d2b4a68"


def write(tmp_path: Path, text: str, name: str = "comfywatch.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Config:
    return load_config(write(tmp_path, text), env or {})


def problems(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env)
    return info.value.problems


def local_target(**fields: object) -> TargetConfig:
    return TargetConfig.model_validate({"name": "t", "url": "http://127.0.0.1:8188", **fields})


TWO_TARGETS = """
[server]
listen = "127.0.0.1:9877"

[defaults]
interval = "15s"
timeout = "5s"

[[targets]]
name = "studio-gpu-1"
kind = "local"
url = "http://127.0.0.1:8188"
headers_file = "{headers}"
stall_after = "10m"
  [targets.canary]
  workflow = "builtin:preview-image"
  interval = "60s"
  timeout = "120s"
  when_busy = "skip"

[[targets]]
name = "cloud"
kind = "cloud"
url = "https://cloud.comfy.org"
api_key_file = "{key}"
  [targets.canary]
  enabled = false
  max_runs_per_day = 24
"""


class TestDefaults:
    def test_no_file_gives_one_local_target(self) -> None:
        """Without a file: one local target on 127.0.0.1:8188 and /metrics on 127.0.0.1:9877."""
        config = load_config(None, {})
        (target,) = config.targets
        assert (target.name, target.kind, target.url) == ("local", "local", DEFAULT_LOCAL_URL)
        assert config.server.listen == DEFAULT_LISTEN == "127.0.0.1:9877"
        assert (config.interval_of(target), config.timeout_of(target), config.stall_after_of(target)) == (
            15.0,
            5.0,
            600.0,
        )
        assert config.defaults.max_body_size == 32 * 2**20
        assert config.defaults.worker_idle_polls == 4
        assert target.canary_enabled is True
        assert target.canary.workflow == "builtin:preview-image"
        assert set(config.modules) == {"local"}
        assert (config.server.shard_index, config.server.shard_count) == (0, 1)

    def test_empty_file_same_as_none(self, tmp_path: Path) -> None:
        """An empty TOML file gives the same configuration as no file."""
        assert load(tmp_path, "") == load_config(None, {})

    def test_comfywatch_url_replaces_default_target(self) -> None:
        """COMFYWATCH_URL sets the default target's URL."""
        config = load_config(None, {"COMFYWATCH_URL": "http://gpu-box:8188"})
        assert [t.url for t in config.targets] == ["http://gpu-box:8188"]

    def test_comfywatch_url_ignored_with_targets(self, tmp_path: Path) -> None:
        """With [[targets]] in the file, COMFYWATCH_URL adds nothing."""
        config = load(tmp_path, '[[targets]]\nname = "a"\nurl = "http://a:1"\n', {"COMFYWATCH_URL": "http://b:2"})
        assert [(t.name, t.url) for t in config.targets] == [("a", "http://a:1")]

    def test_discovery_only_has_no_default_target(self, tmp_path: Path) -> None:
        """With discovery files and no targets, no default target is invented."""
        config = load(tmp_path, '[discovery]\nfiles = ["/etc/comfywatch/targets.d/*.json"]\n')
        assert config.targets == ()
        assert config.discovery.canary.enabled is False

    def test_state_dir_resolution(self) -> None:
        """state_dir: explicit, then $STATE_DIRECTORY (first entry), then XDG_STATE_HOME, then ~/.local/state."""
        config = load_config(None, {})
        assert config.resolved_state_dir({"STATE_DIRECTORY": "/var/lib/comfywatch:/other"}) == Path(
            "/var/lib/comfywatch"
        )
        assert config.resolved_state_dir({"XDG_STATE_HOME": "/x"}) == Path("/x/comfywatch")
        assert config.resolved_state_dir({"HOME": "/home/u"}) == Path("/home/u/.local/state/comfywatch")
        explicit = config.model_copy(update={"state_dir": Path("/srv/state")})
        assert explicit.resolved_state_dir({"STATE_DIRECTORY": "/nope"}) == Path("/srv/state")


class TestTargets:
    def test_two_target_example(self, tmp_path: Path) -> None:
        """A two-target example loads, with per-target overrides and the cloud canary off."""
        headers = write(tmp_path, "X-Proxy-Token: abc\n", "proxy-headers")
        key = write(tmp_path, SECRET + "\n", "cloud_api_key")
        config = load(tmp_path, TWO_TARGETS.format(headers=headers, key=key))
        gpu, cloud = config.targets
        assert config.stall_after_of(gpu) == 600.0
        assert config.interval_of(gpu) == 15.0
        assert (gpu.canary.interval, gpu.canary.timeout, gpu.canary.when_busy) == (60.0, 120.0, "skip")
        assert gpu.canary_enabled is True
        assert (cloud.kind, cloud.url, cloud.canary_enabled, cloud.canary.max_runs_per_day) == (
            "cloud",
            DEFAULT_CLOUD_URL,
            False,
            24,
        )
        assert resolve_credentials(cloud, {}).api_key == SECRET

    def test_cloud_defaults(self) -> None:
        """A cloud target defaults to https://cloud.comfy.org with its canary off (it costs credits)."""
        target = TargetConfig.model_validate({"name": "c", "kind": "cloud"})
        assert (target.url, target.canary_enabled) == (DEFAULT_CLOUD_URL, False)

    def test_target_overrides_defaults(self, tmp_path: Path) -> None:
        """A target's interval/timeout/stall_after win over [defaults]."""
        config = load(
            tmp_path, '[defaults]\ninterval = "30s"\n[[targets]]\nname = "a"\nurl = "http://a"\ntimeout = 2\n'
        )
        (target,) = config.targets
        assert (config.interval_of(target), config.timeout_of(target)) == (30.0, 2.0)

    def test_canary_name(self) -> None:
        """The canary name comes from name=, the builtin's name, or the workflow file's stem."""
        assert local_target().canary.canary_name == "preview-image"
        assert local_target(canary={"workflow": "/etc/comfywatch/my-flow.json"}).canary.canary_name == "my-flow"
        assert local_target(canary={"workflow": "/x.json", "name": "custom"}).canary.canary_name == "custom"

    def test_checks_and_labels(self) -> None:
        """checks and extra labels are kept."""
        target = local_target(checks=["system", "queue"], labels={"rack": "b2", "gpu": "4090"})
        assert target.checks == ("system", "queue")
        assert target.labels == {"rack": "b2", "gpu": "4090"}

    def test_public_url_has_no_secrets(self) -> None:
        """public_url drops userinfo, query and fragment (it becomes a label)."""
        target = local_target(url=f"https://admin:{SECRET}@comfy.example:8443/prefix/?token={SECRET}#x")
        assert target.public_url == "https://comfy.example:8443/prefix"

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ('[[targets]]\nname = "a b"\nurl = "http://a"\n', "targets[0].name: use 1-63 letters"),
            ('[[targets]]\nname = ""\nurl = "http://a"\n', "targets[0].name: use 1-63 letters"),
            ('[[targets]]\nname = "a"\n', "targets[0]: url is required for local targets"),
            ('[[targets]]\nname = "a"\nurl = "ftp://a"\n', "targets[0]: url: expected http:// or https:// with a host"),
            ('[[targets]]\nname = "a"\nurl = "http://"\n', "targets[0]: url: expected http:// or https:// with a host"),
            ('[[targets]]\nname = "a"\nurl = "http://a:99999"\n', "targets[0]: url: invalid port"),
            # Hosts urlsplit accepts and the HTTP client refuses: a zero-width space, an empty IDNA label.
            ('[[targets]]\nname = "a"\nurl = "http://a\\u200bb:1"\n', "targets[0]: url: host is not a valid host name"),
            ('[[targets]]\nname = "a"\nurl = "http://xn--/"\n', "targets[0]: url: host is not a valid host name"),
            # As in file_sd: the raw bytes would reach the url label and the logs.
            ('[[targets]]\nname = "a"\nurl = "http://h\\u0000\\u001b:80/p\\u0007"\n',
             "targets[0]: url: contains control characters or invalid Unicode"),
            (
                '[[targets]]\nname = "a"\nkind = "remote"\nurl = "http://a"\n',
                "targets[0].kind: Input should be 'local' or 'cloud'",
            ),
            ('[[targets]]\nname = "a"\nurl = "http://a"\nlabels = {target = "x"}\n', "label name 'target' is reserved"),
            (
                '[[targets]]\nname = "a"\nurl = "http://a"\nlabels = {"1x" = "x"}\n',
                "is not a valid Prometheus label name",
            ),
            (
                '[[targets]]\nname = "a"\nurl = "http://a"\n[targets.canary]\nwhen_busy = "wait"\n',
                "targets[0].canary.when_busy",
            ),
            (
                '[[targets]]\nname = "a"\nurl = "http://a"\n[targets.canary.verify]\ntext_matches = "("\n',
                "targets[0].canary.verify.text_matches: invalid regular expression",
            ),
            ('[server]\nlisten = "9877"\n', 'server.listen: expected "host:port"'),
            ('[server]\nshard = "3/3"\n', 'server.shard: expected "i/N" with 0 <= i < N'),
                    ],
    )
    def test_invalid_values(self, tmp_path: Path, text: str, expected: str) -> None:
        """Each invalid value is reported at its location with a helpful message."""
        assert any(expected in p for p in problems(tmp_path, text)), problems(tmp_path, text)

    @pytest.mark.parametrize("name", ["good\n", "good\r\n", "\ngood", "good\u2028"])
    def test_a_name_is_the_whole_value(self, name: str) -> None:
        """A name followed by a line break is refused: it becomes the target label and goes into log lines."""
        with pytest.raises(ValueError, match="use 1-63 letters"):
            TargetConfig(name=name, url="http://a")

    def test_a_module_name_is_the_whole_value(self, tmp_path: Path) -> None:
        assert problems(tmp_path, '[modules."local\\n"]\n') == [
            "modules: module name 'local\\n': use 1-63 letters, digits, '_', '-', '.' or ':'"]

    def test_duplicate_names(self, tmp_path: Path) -> None:
        """Two targets with one name would share a target label: refused."""
        text = '[[targets]]\nname = "a"\nurl = "http://a"\n[[targets]]\nname = "a"\nurl = "http://b"\n'
        assert problems(tmp_path, text) == ["(top level): duplicate target names: a"]


T = '[[targets]]\nname = "a"\nurl = "http://a"\n'


class TestRanges:
    """Every duration and number has a range, checked by the one validation check-config, run and reload share."""

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ('[defaults]\ninterval = "0s"\n', "defaults.interval: must be at least 1s (got '0s')"),
            ('[defaults]\ninterval = "1ms"\n', "defaults.interval: must be at least 1s (got '1ms')"),
            ('[defaults]\ninterval = 0.5\n', "defaults.interval: must be at least 1s (got 0.5)"),
            ('[defaults]\ninterval = "2d"\n', "defaults.interval: must be at most 24h (got '2d')"),
            (T + 'interval = "0s"\n', "targets[0].interval: must be at least 1s (got '0s')"),
            ('[defaults]\ntimeout = 0\n', "defaults.timeout: must be at least 100ms (got 0)"),
            (T + 'timeout = "10ms"\n', "targets[0].timeout: must be at least 100ms (got '10ms')"),
            ('[defaults]\nstall_after = "0s"\n', "defaults.stall_after: must be at least 100ms (got '0s')"),
            (T + '[targets.canary]\ninterval = "200ms"\n',
             "targets[0].canary.interval: must be at least 1s (got '200ms')"),
            (T + '[targets.canary]\ntimeout = "0s"\n', "targets[0].canary.timeout: must be at least 1s (got '0s')"),
            (T + '[targets.canary]\ntimeout = "2d"\n', "targets[0].canary.timeout: must be at most 24h (got '2d')"),
            ('[discovery]\nrefresh_interval = "100ms"\n',
             "discovery.refresh_interval: must be at least 1s (got '100ms')"),
            ('[modules.local]\ntimeout = "0s"\n', "modules.local.timeout: must be at least 100ms (got '0s')"),
            ('[modules.local]\ntimeout = "2h"\n', "modules.local.timeout: must be at most 1h (got '2h')"),
            ("[server]\nmax_concurrency = 0\n", "server.max_concurrency: must be at least 1 (got 0)"),
            ("[server]\nmax_concurrency = 20000\n", "server.max_concurrency: must be at most 10000 (got 20000)"),
            ('[server]\nshard = "0/100000"\n',
             "server.shard: expected \"i/N\" with 0 <= i < N <= 1000, e.g. \"0/3\" (got '0/100000')"),
            ("[defaults]\nworker_idle_polls = 0\n", "defaults.worker_idle_polls: must be at least 1 (got 0)"),
            ('[defaults]\nmax_body_size = "100B"\n', "defaults.max_body_size: must be at least 1KiB (got '100B')"),
            ('[defaults]\nmax_body_size = "2GiB"\n', "defaults.max_body_size: must be at most 1GiB (got '2GiB')"),
            (T + "balance_divisor = 0\n", "targets[0].balance_divisor: must be greater than 0 (got 0)"),
            (T + "balance_divisor = 1e12\n",
             "targets[0].balance_divisor: must be at most 1000000000 (got 1000000000000.0)"),
            (T + "balance_divisor = inf\n", "targets[0].balance_divisor: must be a finite number (got inf)"),
            (T + "max_requests_per_minute = 0\n", "targets[0].max_requests_per_minute: must be at least 1 (got 0)"),
            (T + "[targets.canary]\nmax_runs_per_day = -1\n",
             "targets[0].canary.max_runs_per_day: must be at least 0 (got -1)"),
            (T + "[targets.canary.verify]\nimages = 1001\n",
             "targets[0].canary.verify.images: must be at most 1000 (got 1001)"),
        ],
    )
    def test_out_of_range(self, tmp_path: Path, text: str, expected: str) -> None:
        """A value out of its range is one line naming the bound, in the unit the field is written in."""
        assert problems(tmp_path, text) == [expected]

    def test_nan_is_refused(self, tmp_path: Path) -> None:
        """NaN fails every comparison, so it must be refused as such rather than slip through a range."""
        assert problems(tmp_path, T + "balance_divisor = nan\n") == [
            "targets[0].balance_divisor: must be a finite number (got nan)"
        ]

    def test_environment_is_held_to_the_same_ranges(self) -> None:
        """COMFYWATCH_DEFAULTS__INTERVAL=0s is refused like the file's value (the same validation)."""
        with pytest.raises(ConfigError) as info:
            load_config(None, {"COMFYWATCH_DEFAULTS__INTERVAL": "0s"})
        assert info.value.problems == ["defaults.interval: must be at least 1s (got '0s')"]

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ('[defaults]\ninterval = "5s"\ntimeout = "5s"\n',
             ["defaults.timeout: must be shorter than the interval (5s)"]),
            (T + 'interval = "2s"\n',
             ["targets[0].interval: must be longer than the timeout (5s, from [defaults]): set this target's timeout"]),
            (T + 'timeout = "20s"\n', ["targets[0].timeout: must be shorter than the interval (15s, from [defaults])"]),
            (T + 'interval = "2s"\ntimeout = "2s"\n', ["targets[0].timeout: must be shorter than the interval (2s)"]),
            (T + 'timeout = "20s"\n' + T.replace('"a"', '"b"') + 'interval = "1s"\n',
             ["targets[0].timeout: must be shorter than the interval (15s, from [defaults])",
              "targets[1].interval: must be longer than the timeout (5s, from [defaults]): set this target's timeout"]),
        ],
    )
    def test_timeout_shorter_than_interval(self, tmp_path: Path, text: str, expected: list[str]) -> None:
        """A poll's requests must end before the next poll is due: the effective timeout is below the interval,
        reported where the user can fix it (the target that set one of the two, else [defaults])."""
        assert problems(tmp_path, text) == expected

    @pytest.mark.parametrize(
        "text",
        [
            '[defaults]\ninterval = "1s"\ntimeout = "900ms"\n',
            T + 'interval = "2s"\ntimeout = "1s"\n',
            '[defaults]\ninterval = "2s"\ntimeout = "1s"\n' + T + 'interval = "10s"\n',
            T + '[targets.canary]\ninterval = "60s"\ntimeout = "120s"\n',
        ],
    )
    def test_valid_relations(self, tmp_path: Path, text: str) -> None:
        """Timeouts below their interval load; a canary may run longer than its interval (the next run waits)."""
        load(tmp_path, text)

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ('[[targets]]\nname = "a"\nurl = "http://a/' + "x" * 2048 + '"\n',
             "targets[0].url: must be at most 2048 characters"),
            (T + 'headers_file = "/etc/a\\u0000b"\n',
             "targets[0].headers_file: must not contain a NUL character (got '/etc/a\\x00b')"),
            (T + f'tls_ca_file = "/{"x" * 4096}"\n', "targets[0].tls_ca_file: must be at most 4096 characters"),
            (f'state_dir = "/{"x" * 4096}"\n', "state_dir: must be at most 4096 characters"),
            (T + '[targets.canary]\nname = "' + "n" * 65 + '"\n',
             "targets[0].canary.name: must be at most 64 characters"),
            (T + '[targets.canary]\nworkflow = "/' + "w" * 4096 + '"\n',
             "targets[0].canary.workflow: must be at most 4096 characters"),
            (T + '[targets.canary]\nworkflow = "/tmp/x\\u0000y.json"\n',
             "targets[0].canary.workflow: must not contain a NUL character (got '/tmp/x\\x00y.json')"),
            (T + '[targets.canary.verify]\ntext_matches = "' + "a" * 1001 + '"\n',
             "targets[0].canary.verify.text_matches: must be at most 1000 characters"),
            (T + 'checks = ["system", "system"]\n', "targets[0].checks: each check may appear once"),
            ('[discovery]\nfiles = [' + ", ".join(['"/x"'] * 101) + "]\n",
             "discovery.files: must have at most 100 entries"),
            ('[discovery]\nfiles = ["/etc/\\u0000/*.json"]\n',
             "discovery.files[0]: must not contain a NUL character (got '/etc/\\x00/*.json')"),
            ("".join(f"[modules.m{i}]\n" for i in range(101)), "modules: must have at most 100 entries"),
            ('[modules."a b"]\n', "modules: module name 'a b': use 1-63 letters, digits, '_', '-', '.' or ':'"),
            ('[server]\nlisten = "' + "h" * 300 + ':1"\n', "server.listen: must be at most 300 characters"),
        ],
    )
    def test_sizes_of_strings_and_lists(self, tmp_path: Path, text: str, expected: str) -> None:
        """Strings, paths and lists are bounded too; a path can never carry a NUL byte to the OS."""
        assert problems(tmp_path, text) == [expected]

    def test_target_count(self, tmp_path: Path) -> None:
        """More than 10000 static targets is refused at once, before any of them is validated."""
        text = "".join(f'[[targets]]\nname = "t{i}"\nurl = "http://h:{i % 60000 + 1}"\n' for i in range(10_001))
        started = time.monotonic()
        assert problems(tmp_path, text) == ["targets: must have at most 10000 entries"]
        assert time.monotonic() - started < 5


class TestErrorMessages:
    def test_location_and_value(self, tmp_path: Path) -> None:
        """A bad duration in the second target reads `targets[1].interval: invalid duration ...`."""
        text = (
            '[[targets]]\nname = "a"\nurl = "http://a"\n[[targets]]\nname = "b"\nurl = "http://b"\ninterval = "abc"\n'
        )
        (problem,) = problems(tmp_path, text)
        assert problem.startswith("targets[1].interval: invalid duration 'abc'")

    def test_source_prefixes_every_line(self, tmp_path: Path) -> None:
        """str(ConfigError) prefixes each problem with the file name, one per line."""
        path = write(tmp_path, '[server]\nlistn = 1\n[defaults]\ntimeout = "x"\n')
        with pytest.raises(ConfigError) as info:
            load_config(path, {})
        lines = str(info.value).splitlines()
        assert len(lines) == 2
        assert all(line.startswith(f"{path}: ") for line in lines)
        assert info.value.source == str(path)

    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ('[server]\nlistn = "x"\n', "server.listn: unknown key — did you mean 'listen'?"),
            ('[defaults]\nintervall = "15s"\n', "defaults.intervall: unknown key — did you mean 'interval'?"),
            (
                'intervall = "15s"\n',
                "intervall: unknown key (known keys: server, defaults, metrics, status, targets, discovery, modules, "
                "probe, workflows, state_dir)",
            ),
            (
                '[[targets]]\nname = "a"\nurl = "http://a"\nintervall = "1s"\n',
                "targets[0].intervall: unknown key — did you mean 'interval'?",
            ),
            (
                '[[targets]]\nname = "a"\nurl = "http://a"\n[targets.canary]\nworkflw = "x"\n',
                "targets[0].canary.workflw: unknown key — did you mean 'workflow'?",
            ),
            (
                '[[targets]]\nname = "a"\nurl = "http://a"\n[targets.canary.verify]\nimage = 1\n',
                "targets[0].canary.verify.image: unknown key — did you mean 'images'?",
            ),
            ('[discovery.canary]\nenabeld = true\n', "discovery.canary.enabeld: unknown key — did you mean 'enabled'?"),
            ('[modules.gpu]\ntimeuot = "1s"\n', "modules.gpu.timeuot: unknown key — did you mean 'timeout'?"),
            ('[modules.gpu]\nxyz = 1\n', "modules.gpu.xyz: unknown key (known keys: kind, timeout, headers_file, "
                                         "bearer_token_file, checks, allow)"),
        ],
    )
    def test_unknown_keys_are_errors(self, tmp_path: Path, text: str, expected: str) -> None:
        """A typo anywhere is an error naming the key and the closest known one (else the known ones)."""
        assert problems(tmp_path, text) == [expected]

    def test_every_problem_reported(self, tmp_path: Path) -> None:
        """All problems are collected in one pass."""
        text = '[server]\nlisten = "x"\n[defaults]\ninterval = "?"\ntimeout = -1\n'
        assert len(problems(tmp_path, text)) == 3

    def test_invalid_toml(self, tmp_path: Path) -> None:
        """A TOML syntax error is one problem with the line number."""
        (problem,) = problems(tmp_path, "[server\nlisten = 1\n")
        assert problem.startswith("invalid TOML:") and "line 1" in problem

    def test_missing_file(self, tmp_path: Path) -> None:
        """A missing file is reported with the OS reason."""
        with pytest.raises(ConfigError) as info:
            load_config(tmp_path / "nope.toml", {})
        assert info.value.problems == ["cannot read file: No such file or directory"]

    def test_not_utf8(self, tmp_path: Path) -> None:
        """A file that is not UTF-8 is reported as such."""
        path = tmp_path / "c.toml"
        path.write_bytes(b'listen = "\xff"\n')
        with pytest.raises(ConfigError) as info:
            load_config(path, {})
        assert info.value.problems == ["file is not valid UTF-8"]

    def test_deeply_nested_toml(self, tmp_path: Path) -> None:
        """Absurd nesting is a ConfigError, not a RecursionError."""
        assert problems(tmp_path, "a = " + "[" * 5000 + "]" * 5000) == ["invalid TOML: nested too deeply"]

    def test_wrong_section_types(self, tmp_path: Path) -> None:
        """A scalar where a table belongs is reported, not an AttributeError."""
        assert problems(tmp_path, "discovery = 5\n")[0].startswith("discovery: Input should be a valid dictionary")
        assert problems(tmp_path, "targets = 5\n")[0].startswith("targets: Input should be a valid")

    def test_huge_numbers(self, tmp_path: Path) -> None:
        """Overflowing sizes and durations are config problems, not crashes."""
        assert problems(tmp_path, f'[defaults]\nmax_body_size = "{"9" * 400}"\n')[0].startswith(
            "defaults.max_body_size: invalid size"
        )
        assert problems(tmp_path, "", {"COMFYWATCH_DEFAULTS__INTERVAL": "9" * 400}) == [
            "defaults.interval: duration must be between 0 and 365 days"
        ]


class TestEnvOverrides:
    def test_section_key(self, tmp_path: Path) -> None:
        """COMFYWATCH_SERVER__LISTEN overrides the file's value."""
        config = load(tmp_path, '[server]\nlisten = "127.0.0.1:9877"\n', {"COMFYWATCH_SERVER__LISTEN": "0.0.0.0:9100"})
        assert config.server.listen == "0.0.0.0:9100"

    def test_plain_text_values_are_converted(self) -> None:
        """Plain-text numbers, booleans and durations become the field's type."""
        env = {
            "COMFYWATCH_DEFAULTS__INTERVAL": "30s",
            "COMFYWATCH_DEFAULTS__TIMEOUT": "2.5",
            "COMFYWATCH_SERVER__MAX_CONCURRENCY": "8",
            "COMFYWATCH_DEFAULTS__MAX_BODY_SIZE": "1048576",
        }
        config = load_config(None, env)
        assert (config.defaults.interval, config.defaults.timeout) == (30.0, 2.5)
        assert config.server.max_concurrency == 8
        assert config.defaults.max_body_size == 1048576

    def test_numeric_text_for_string_fields(self) -> None:
        """A target named "123" or a label value "12" stays a string (values are plain text)."""
        env = {
            "COMFYWATCH_TARGETS__0__NAME": "123",
            "COMFYWATCH_TARGETS__0__URL": "http://h:8188",
            "COMFYWATCH_TARGETS__0__LABELS__RACK": "12",
            "COMFYWATCH_TARGETS__0__CANARY__ENABLED": "false",
        }
        (target,) = load_config(None, env).targets
        assert (target.name, target.labels, target.canary_enabled) == ("123", {"rack": "12"}, False)

    def test_json_for_lists_and_tables(self) -> None:
        """Lists and tables are given as JSON."""
        env = {
            "COMFYWATCH_TARGETS__0__NAME": "a",
            "COMFYWATCH_TARGETS__0__URL": "http://a",
            "COMFYWATCH_TARGETS__0__CHECKS": '["system", "queue"]',
            "COMFYWATCH_TARGETS__0__LABELS": '{"rack": "b2"}',
        }
        (target,) = load_config(None, env).targets
        assert (target.checks, target.labels) == (("system", "queue"), {"rack": "b2"})

    def test_index_into_file_targets(self, tmp_path: Path) -> None:
        """COMFYWATCH_TARGETS__1__URL changes the second target of the file only."""
        text = '[[targets]]\nname = "a"\nurl = "http://a"\n[[targets]]\nname = "b"\nurl = "http://b"\n'
        config = load(tmp_path, text, {"COMFYWATCH_TARGETS__1__URL": "http://b2:8188"})
        assert [t.url for t in config.targets] == ["http://a", "http://b2:8188"]

    def test_not_config_variables_ignored(self) -> None:
        """Logging, config-path, API-key and foreign variables are not config paths."""
        env = {
            "COMFYWATCH_LOG_LEVEL": "debug",
            "COMFYWATCH_LOG_FORMAT": "json",
            "COMFYWATCH_CONFIG": "/x.toml",
            "COMFYWATCH_CLOUD_API_KEY": SECRET,
            "COMFYWATCH_TARGET_CLOUD_API_KEY": SECRET,
            "HOME": "/root",
            "COMFYWATCHER__X": "1",
            "COMFYWATCH_NOSEPARATOR": "1",
        }
        assert load_config(None, env) == load_config(None, {})

    def test_unknown_env_key(self) -> None:
        """A typo in an override is an unknown key like in the file."""
        with pytest.raises(ConfigError) as info:
            load_config(None, {"COMFYWATCH_SERVER__LISTN": "x"})
        assert info.value.problems == ["server.listn: unknown key — did you mean 'listen'?"]
        assert info.value.source == "environment"

    def test_absurd_list_index(self) -> None:
        """An absurd index is refused at once instead of building a ten-billion-element list."""
        started = time.monotonic()
        with pytest.raises(ConfigError) as info:
            load_config(None, {"COMFYWATCH_TARGETS__99999999999999__URL": "http://x"})
        assert info.value.problems == ["invalid COMFYWATCH_* override path"]
        assert time.monotonic() - started < 5

    @pytest.mark.parametrize("index", ["X", "-1", "1x"])
    def test_non_numeric_index_into_file_list(self, tmp_path: Path, index: str) -> None:
        """A non-numeric or negative index into an existing list is an override-path problem."""
        text = '[[targets]]\nname = "a"\nurl = "http://a"\n'
        assert problems(tmp_path, text, {f"COMFYWATCH_TARGETS__{index}__URL": "http://x"}) == [
            "invalid COMFYWATCH_* override path"
        ]

    def test_non_numeric_index_without_list(self) -> None:
        """With no targets list to index, a non-numeric index makes a table, which validation rejects."""
        with pytest.raises(ConfigError) as info:
            load_config(None, {"COMFYWATCH_TARGETS__X__URL": "http://x"})
        assert info.value.problems == ["targets: Input should be a valid tuple"]

    def test_deeply_nested_json_value(self) -> None:
        """A pathological JSON value is taken as text, not a RecursionError."""
        with pytest.raises(ConfigError) as info:
            load_config(None, {"COMFYWATCH_SERVER__LISTEN": "[" * 100_000})
        assert info.value.problems[0].startswith("server.listen:")


class TestSecrets:
    def test_headers_file(self, tmp_path: Path) -> None:
        """headers_file holds `Name: value` lines like curl -H @file; comments and blanks are skipped."""
        headers = write(tmp_path, f"# proxy\n\nX-Api-Token: {SECRET}\nCF-Access-Client-Id:  abc : def \n", "h")
        target = local_target(headers_file=str(headers))
        creds = resolve_credentials(target, {})
        assert creds.headers == {"X-Api-Token": SECRET, "CF-Access-Client-Id": "abc : def"}

    def test_bearer_token_file(self, tmp_path: Path) -> None:
        """bearer_token_file becomes an Authorization header; the trailing newline is stripped."""
        token = write(tmp_path, SECRET + "\n", "token")
        creds = resolve_credentials(local_target(bearer_token_file=str(token)), {})
        assert creds.headers == {"Authorization": f"Bearer {SECRET}"}

    def test_url_userinfo_is_basic_auth(self) -> None:
        """URL userinfo becomes basic auth (percent-decoded) and is removed from the URL used and shown."""
        url = f"http://{quote_userinfo('ops@example', 'p@ss:/w%rd')}@127.0.0.1:8188/comfy/"
        target = local_target(url=url)
        assert resolve_credentials(target, {}).basic_auth == ("ops@example", "p@ss:/w%rd")
        assert url_without_userinfo(target.url) == "http://127.0.0.1:8188/comfy"
        assert target.public_url == "http://127.0.0.1:8188/comfy"

    def test_no_credentials(self) -> None:
        """A plain local target has no secrets at all."""
        creds = resolve_credentials(local_target(), {"COMFYWATCH_CLOUD_API_KEY": SECRET})
        assert creds == Credentials()
        assert creds.secret_values() == []

    def test_cloud_key_sources_in_order(self, tmp_path: Path) -> None:
        """api_key_file > COMFYWATCH_TARGET_<NAME>_API_KEY > COMFYWATCH_CLOUD_API_KEY > credential > plaintext."""
        creds_dir = tmp_path / "creds"
        creds_dir.mkdir()
        (creds_dir / CREDENTIAL_NAME).write_text("from-credential\n")
        key_file = write(tmp_path, "from-file\n", "key")
        fields = {"name": "my-cloud.1", "kind": "cloud", "api_key": "from-toml", "allow_plaintext_api_key": True}
        env = {
            "COMFYWATCH_TARGET_MY_CLOUD_1_API_KEY": "from-target-env",
            "COMFYWATCH_CLOUD_API_KEY": "from-env",
            "CREDENTIALS_DIRECTORY": str(creds_dir),
        }
        with_file = TargetConfig.model_validate({**fields, "api_key_file": str(key_file)})
        without_file = TargetConfig.model_validate(fields)
        assert resolve_credentials(with_file, env).api_key == "from-file"
        assert resolve_credentials(without_file, env).api_key == "from-target-env"
        del env["COMFYWATCH_TARGET_MY_CLOUD_1_API_KEY"]
        assert resolve_credentials(without_file, env).api_key == "from-env"
        del env["COMFYWATCH_CLOUD_API_KEY"]
        assert resolve_credentials(without_file, env).api_key == "from-credential"
        del env["CREDENTIALS_DIRECTORY"]
        assert resolve_credentials(without_file, env).api_key == "from-toml"

    def test_systemd_credential(self, tmp_path: Path) -> None:
        """$CREDENTIALS_DIRECTORY/comfywatch_cloud_api_key (LoadCredential=) is read at load time."""
        (tmp_path / CREDENTIAL_NAME).write_text(SECRET + "\n")
        config = load_config(
            write(tmp_path, '[[targets]]\nname = "cloud"\nkind = "cloud"\n'), {"CREDENTIALS_DIRECTORY": str(tmp_path)}
        )
        assert resolve_credentials(config.targets[0], {"CREDENTIALS_DIRECTORY": str(tmp_path)}).api_key == SECRET

    def test_empty_credential_means_no_key(self, tmp_path: Path) -> None:
        """An empty credential file (docs/install.md: for hosts without a Cloud target) gives no key."""
        (tmp_path / CREDENTIAL_NAME).write_text("")
        target = TargetConfig.model_validate({"name": "c", "kind": "cloud"})
        assert resolve_credentials(target, {"CREDENTIALS_DIRECTORY": str(tmp_path)}).api_key is None

    def test_cloud_env_key(self) -> None:
        """COMFYWATCH_CLOUD_API_KEY serves a cloud target."""
        target = TargetConfig.model_validate({"name": "c", "kind": "cloud"})
        assert resolve_credentials(target, {"COMFYWATCH_CLOUD_API_KEY": SECRET}).api_key == SECRET

    def test_plaintext_key_refused(self, tmp_path: Path) -> None:
        """api_key in the TOML is refused unless allow_plaintext_api_key, and the key is never echoed."""
        text = f'[[targets]]\nname = "c"\nkind = "cloud"\napi_key = "{SECRET}"\n'
        path = write(tmp_path, text)
        with pytest.raises(ConfigError) as info:
            load_config(path, {})
        (problem,) = info.value.problems
        assert problem.startswith("targets[0]: api_key in the config file is refused: use api_key_file")
        assert SECRET not in str(info.value)

    def test_plaintext_key_allowed_but_hidden(self, tmp_path: Path) -> None:
        """With allow_plaintext_api_key the key works, but repr and dumps of the config hide it."""
        text = f'[[targets]]\nname = "c"\nkind = "cloud"\napi_key = "{SECRET}"\nallow_plaintext_api_key = true\n'
        config = load(tmp_path, text)
        assert resolve_credentials(config.targets[0], {}).api_key == SECRET
        assert SECRET not in repr(config)
        assert SECRET not in str(config.model_dump())

    def test_credentials_repr_hides_values(self) -> None:
        """Credentials' repr shows no header, password or key; secret_values lists them for redaction."""
        creds = Credentials(headers={"X-Token": SECRET}, basic_auth=("user", "pw-123"), api_key="key-456")
        assert SECRET not in repr(creds) and "pw-123" not in repr(creds) and "key-456" not in repr(creds)
        assert set(creds.secret_values()) == {SECRET, "pw-123", "key-456", basic_auth_header("user", "pw-123")}

    def test_the_basic_token_sent_is_a_secret(self) -> None:
        """The Authorization value built from URL userinfo is registered, so a server echoing the bare base64
        token (without "Basic", split from any header name) has it masked."""
        registry = SecretRegistry()
        creds = resolve_credentials(local_target(url=f"http://{quote_userinfo('monitor', 'Pa55/wörd')}@h:1"), {})
        for value in creds.secret_values():
            registry.register(value)
        token = basic_auth_header("monitor", "Pa55/wörd").removeprefix("Basic ")
        assert registry.scrub(f"for {token}, as {quote(token, safe='')}") == "for ***, as ***"

    def test_missing_secret_file(self, tmp_path: Path) -> None:
        """A missing key file is a config problem naming the file and the OS reason."""
        missing = tmp_path / "nope"
        with pytest.raises(ConfigError) as info:
            load(tmp_path, f'[[targets]]\nname = "c"\nkind = "cloud"\napi_key_file = "{missing}"\n')
        assert info.value.problems == [f"targets[0]: cannot read api_key_file '{missing}': No such file or directory"]

    def test_secret_file_not_utf8(self, tmp_path: Path) -> None:
        """A key file that is not UTF-8 is reported without quoting any of its bytes."""
        key = tmp_path / "key"
        key.write_bytes(b"\xfe\xff" + SECRET.encode())
        with pytest.raises(ConfigError) as info:
            load(tmp_path, f'[[targets]]\nname = "c"\nkind = "cloud"\napi_key_file = "{key}"\n')
        assert info.value.problems == [f"targets[0]: cannot read api_key_file '{key}': not valid UTF-8"]
        assert "0xfe" not in str(info.value) and SECRET not in str(info.value)

    def test_bad_headers_line(self, tmp_path: Path) -> None:
        """A malformed headers_file line is reported by number without its content."""
        headers = write(tmp_path, f"X-Ok: 1\nBearer {SECRET}\n", "h")
        with pytest.raises(ConfigError) as info:
            load(tmp_path, f'[[targets]]\nname = "a"\nurl = "http://a"\nheaders_file = "{headers}"\n')
        assert info.value.problems == ["targets[0]: headers_file: line 2: expected 'Name: value'"]
        assert SECRET not in str(info.value)

    @pytest.mark.parametrize(
        ("text", "env"),
        [
            (f'targets = ["http://admin:{SECRET}@h:8188"]\n', {}),
            (f'[[targets]]\nname = "a"\nurl = "ftp://admin:{SECRET}@h"\n', {}),
            (f'[[targets]]\nname = "a"\nurl = "http://admin:{SECRET}@h:notaport"\n', {}),
            (f'[[targets]]\nname = "a b"\nurl = "http://admin:{SECRET}@h"\n', {}),
            (f'[[targets]]\nname = "c"\nkind = "cloud"\napi_key = "{SECRET}"\nbalance_divisor = -1\n', {}),
            (f'[[targets]]\nname = "c"\nkind = "cloud"\napi_key = ["{SECRET}"]\n', {}),
            (f'[[targets]]\nname = "c"\nkind = "cloud"\napi_key = {{ k = "{SECRET}" }}\n', {}),
            ("", {"COMFYWATCH_URL": f"ftp://admin:{SECRET}@h"}),
            ("", {"COMFYWATCH_URL": f"http://admin:{SECRET}@h:1:2"}),
            ("", {"COMFYWATCH_TARGETS__0__API_KEY": SECRET}),
            ("", {"COMFYWATCH_TARGETS__0__URL": f"http://u:{SECRET}@h", "COMFYWATCH_TARGETS__0__NAME": "!"}),
        ],
    )
    def test_secret_never_in_errors(self, tmp_path: Path, text: str, env: dict[str, str]) -> None:
        """Whatever is wrong, a key or URL password in the config never appears in the error message."""
        with pytest.raises(ConfigError) as info:
            load(tmp_path, text, env)
        assert SECRET not in str(info.value)


class TestHelpers:
    def test_parse_headers_file(self) -> None:
        """Header names must be RFC 7230 tokens; values keep inner colons."""
        assert parse_headers_file("A: b:c\n  # c\nX-Y:z") == {"A": "b:c", "X-Y": "z"}
        with pytest.raises(ValueError, match="line 1"):
            parse_headers_file("Bad Name: x")
        with pytest.raises(ValueError, match="line 1"):
            parse_headers_file("no colon")

    @pytest.mark.parametrize(
        ("url", "expected"),
        [
            ("http://u:p@h:1/x/?token=y#f", "http://h:1/x"),
            ("https://[::1]:8443/", "https://[::1]:8443"),
            ("http://h", "http://h"),
            ("http://h:bad", "<invalid url>"),
        ],
    )
    def test_strip_secrets_from_url(self, url: str, expected: str) -> None:
        """Userinfo, query and fragment are dropped; IPv6 hosts keep their brackets."""
        assert strip_secrets_from_url(url) == expected

    def test_url_without_userinfo_keeps_query(self) -> None:
        """The URL the client uses keeps its query (a proxy may need it) but not the userinfo."""
        assert url_without_userinfo("https://u:p@[::1]:8443/a/?x=1#f") == "https://[::1]:8443/a?x=1"

    def test_validate_labels(self) -> None:
        """At most 16 labels, valid names up to 128 characters, no reserved or __ names, values up to 128 characters."""
        assert validate_labels({"a": "1", "_b": "", "n" * 128: ""}) == {"a": "1", "_b": "", "n" * 128: ""}
        for bad in ({f"l{i}": "x" for i in range(17)}, {"__x": "1"}, {"job": "1"}, {"a-b": "1"}, {"a": "x" * 129},
                    {"n" * 129: "1"}, {"rack\n": "1"}):
            with pytest.raises(ValueError):
                validate_labels(bad)

    def test_label_values_are_made_safe_as_server_strings_are(self, tmp_path: Path) -> None:
        """A label value from the TOML file with a terminal escape, a bidi override or a NUL is kept as the status
        page shows it, in every output (the status API's JSON included), not as written."""
        assert validate_labels({"owner": "alice\u202egnp.exe\x1b[2J\x00"}) == {"owner": "alicegnp.exe [2J "}
        # The bound is on the value kept: bidi controls removed do not count against it.
        assert validate_labels({"rack": "r" * 128 + "\u202e\u202c"}) == {"rack": "r" * 128}
        path = tmp_path / "comfywatch.toml"
        path.write_text('[[targets]]\nname = "a"\nurl = "http://127.0.0.1:1"\n'
                        'labels = { owner = "alice\\u202egnp.exe\\u001b[2J" }\n', encoding="utf-8")
        assert load_config(path).targets[0].labels == {"owner": "alicegnp.exe [2J"}

    def test_shard_properties(self) -> None:
        """server.shard "i/N" is split into index and count."""
        config = load_config(None, {"COMFYWATCH_SERVER__SHARD": " 2/5 "})
        assert (config.server.shard, config.server.shard_index, config.server.shard_count) == ("2/5", 2, 5)

    @pytest.mark.parametrize(
        ("url", "problem"),
        [
            ("not-a-url", "--url: expected http:// or https:// with a host, e.g. http://127.0.0.1:8188"),
            ("127.0.0.1:8188", "--url: expected http:// or https:// with a host, e.g. http://127.0.0.1:8188"),
            (f"ftp://u:{SECRET}@h", "--url: expected http:// or https:// with a host, e.g. http://127.0.0.1:8188"),
            (f"http://u:{SECRET}@127.0.0.1:99999", "--url: invalid port"),
            ("http://[::1", "--url: not a valid URL"),
            (f"http://u:{SECRET}@\uff0e\uff0e:8188", "--url: host is not a valid host name"),
        ],
    )
    def test_bad_url_option(self, url: str, problem: str) -> None:
        """A bad --url is a command-line ConfigError that never repeats the URL (it may hold a password)."""
        with pytest.raises(ConfigError) as info:
            target_from_url_option(url)
        assert (info.value.source, info.value.problems) == ("command line", [problem])

    def test_url_option_names_the_target_by_its_host(self) -> None:
        """The target is called by its host when that is a valid name, else "url"; an explicit name wins."""
        assert target_from_url_option("http://gpu-1:8188").name == "gpu-1"
        assert target_from_url_option("http://[::1]:8188").name == "url"
        cloud = target_from_url_option("https://cloud.comfy.org", "cloud", "cloud")
        assert (cloud.name, cloud.kind, cloud.url) == ("cloud", "cloud", "https://cloud.comfy.org")

    def test_config_file(self) -> None:
        """--config wins over $COMFYWATCH_CONFIG; with neither there is no file."""
        assert config_file("a.toml", {"COMFYWATCH_CONFIG": "b.toml"}) == Path("a.toml")
        assert config_file(None, {"COMFYWATCH_CONFIG": "b.toml"}) == Path("b.toml")
        assert config_file(None, {}) is None


class TestWorkflowWatch:
    """Which targets a [[workflows]] entry watches: by name, by pool label (config or file_sd), or all."""

    def test_selectors(self) -> None:
        pooled = TargetConfig(name="gpu-1", url="http://gpu-1:8188", labels={"pool": "sdxl"})
        other = TargetConfig(name="gpu-2", url="http://gpu-2:8188")
        assert WorkflowWatch(path=Path("w")).watches(pooled) and WorkflowWatch(path=Path("w")).watches(other)
        by_pool = WorkflowWatch(path=Path("w"), pool="sdxl")
        assert by_pool.watches(pooled) and not by_pool.watches(other)
        both = WorkflowWatch(path=Path("w"), pool="sdxl", targets=("gpu-2",))
        assert both.watches(pooled) and both.watches(other)
        assert not WorkflowWatch(path=Path("w"), targets=()).watches(other)

    def test_entries_and_interval_are_bounded(self) -> None:
        with pytest.raises(ValidationError):
            Config.model_validate({"workflows": [{"path": "w"}] * 101})
        with pytest.raises(ValidationError):
            Config.model_validate({"defaults": {"catalog_interval": "2d"}})
        with pytest.raises(ValidationError):
            Config.model_validate({"workflows": [{"path": "w", "pools": "typo"}]})
