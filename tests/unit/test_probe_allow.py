"""``probe_target_allowed``: where /probe may connect, by ``[probe] allow``, a module's ``allow``, and (for a
module that sends credentials) the targets of the config that already get those credentials."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from comfywatch.config import Config, ConfigError, load_config, probe_target_allowed

SECRET = "pw-9c1e44a7"
NOT_IN_PROBE_ALLOW = "target not in [probe] allow"


def config(**data: Any) -> Config:
    return Config.model_validate({"targets": [{"name": "t", "url": "http://127.0.0.1:8188"}], **data})


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, {})
    return info.value.problems


class TestOpenByDefault:
    @pytest.mark.parametrize("url", ["http://203.0.113.7:8188", "https://anywhere.example", "http://[fe80::1%25eth0]/"])
    def test_a_module_without_credentials_probes_anything(self, url: str) -> None:
        """Like blackbox_exporter: with no allow list and no credentials, a module may probe any host."""
        assert probe_target_allowed(config(), "local", url) is None

    def test_unknown_module(self) -> None:
        assert probe_target_allowed(config(), "nope", "http://127.0.0.1:8188") == "unknown module"


GLOBAL = config(probe={"allow": ["10.0.0.0/8", "gpu-1.example.net", "gpu-2.example.net:8188", "[fd00::1]:9000",
                                 "192.168.1.5", "Bücher.example", "strasse.de", "127.0.0.0/8"]})


class TestProbeAllow:
    @pytest.mark.parametrize(
        "url",
        [
            "http://10.1.2.3:8188",
            "https://10.255.255.255",
            "http://[::ffff:10.1.2.3]:8188",  # the same IPv4 host, written as an IPv4-mapped IPv6 address
            "http://GPU-1.Example.NET:1234/prefix?x=1",
            f"http://monitor:{SECRET}@gpu-1.example.net",
            "http://gpu-2.example.net:8188",
            "https://gpu-2.example.net:8188",
            "http://[fd00::1]:9000",
            "http://192.168.1.5",
            "http://BÜCHER.example",
            "http://xn--bcher-kva.example",
        ],
    )
    def test_allowed(self, url: str) -> None:
        """Networks match IP addresses; host names match case-insensitively and after IDNA; ports when given."""
        assert probe_target_allowed(GLOBAL, "local", url) is None

    @pytest.mark.parametrize(
        "url",
        [
            "http://11.0.0.1",
            "http://gpu-2.example.net:8189",
            "http://[fd00::1]:9001",
            "http://192.168.1.6",
            "http://gpu-1.example.net.evil.example",
            "http://10.0.0.1@evil.example",  # userinfo, not host: the connection goes to evil.example
            "http://localhost:8188",  # host names are never resolved, so no network entry matches them
            "http://2130706433/",  # 127.0.0.1 to the resolver, but not an IP address here
            "http://0x7f.1/",
            "http://gpu-1.example.net.:8188",  # the absolute name may be another host than the relative one
            "http://straße.de",  # the client's IDNA 2008 encodes it as xn--strae-oqa.de, not strasse.de
        ],
    )
    def test_refused(self, url: str) -> None:
        """Anything not listed is refused, including tricks that look like a listed host."""
        assert probe_target_allowed(GLOBAL, "local", url) == NOT_IN_PROBE_ALLOW

    def test_a_host_that_cannot_be_checked(self) -> None:
        """An IPv6 scope id cannot be compared with a list: refused, with its own reason."""
        assert probe_target_allowed(GLOBAL, "local", "http://[fe80::1%25eth0]:80") == (
            "the target's host cannot be checked against an allow list"
        )

    def test_an_empty_list_refuses_every_target(self) -> None:
        """allow = [] turns /probe off."""
        assert probe_target_allowed(config(probe={"allow": []}), "local", "http://127.0.0.1:8188") == (
            NOT_IN_PROBE_ALLOW
        )


class TestModuleAllow:
    def test_module_list_limits_that_module(self) -> None:
        """A module's allow limits it alone; [probe] allow still limits it too."""
        cfg = config(probe={"allow": ["10.0.0.0/8"]},
                     modules={"gpu": {"allow": ["10.0.0.5", "198.51.100.1"]}, "local": {}})
        assert probe_target_allowed(cfg, "gpu", "http://10.0.0.5:8188") is None
        assert probe_target_allowed(cfg, "gpu", "http://10.0.0.6:8188") == "target not in modules.gpu.allow"
        assert probe_target_allowed(cfg, "gpu", "http://198.51.100.1") == NOT_IN_PROBE_ALLOW
        assert probe_target_allowed(cfg, "local", "http://10.0.0.6:8188") is None


class TestModulesWithCredentials:
    @pytest.fixture
    def cfg(self, tmp_path: Path) -> Config:
        headers, token = tmp_path / "headers", tmp_path / "token"
        return Config.model_validate({
            "targets": [
                {"name": "t1", "url": "http://10.0.0.5:8188", "headers_file": str(headers)},
                {"name": "t2", "url": f"https://u:{SECRET}@gpu.example:8443/comfy", "headers_file": str(headers),
                 "bearer_token_file": str(token)},
                {"name": "t3", "url": "http://10.0.0.9:8188"},
            ],
            "modules": {
                "proxy": {"headers_file": str(headers)},
                "both": {"headers_file": str(headers), "bearer_token_file": str(token)},
                "listed": {"headers_file": str(headers), "allow": ["probe-only.example"]},
                "open": {},
            },
        })

    @pytest.mark.parametrize(
        "url",
        ["http://10.0.0.5:8188", "http://10.0.0.5:8188/other/path?x=1", f"http://u:{SECRET}@10.0.0.5:8188",
         "https://gpu.example:8443", "https://GPU.example:8443/"],
    )
    def test_the_targets_that_use_the_same_files(self, cfg: Config, url: str) -> None:
        """A module sending headers_file may probe the targets that send the same file: same scheme, host, port."""
        assert probe_target_allowed(cfg, "proxy", url) is None

    @pytest.mark.parametrize(
        "url",
        ["http://10.0.0.5:9999",  # another port of the host: maybe another service
         "http://gpu.example:8443",  # https downgraded to http would send the header in clear
         "http://10.0.0.9:8188",  # a target of the config, but not one that gets this header
         "http://evil.example", f"http://u:{SECRET}@evil.example"],
    )
    def test_anything_else_is_refused(self, cfg: Config, url: str) -> None:
        """Any other host, port or scheme is refused; the reason says how to allow more and never holds the URL."""
        reason = probe_target_allowed(cfg, "proxy", url)
        assert reason == ("module 'proxy' sends credentials, and only to the targets that use the same files; "
                          "list other hosts in modules.proxy.allow")

    def test_every_file_of_the_module_must_be_shared(self, cfg: Config) -> None:
        """A module sending a header and a token only goes where both already go."""
        assert probe_target_allowed(cfg, "both", "https://gpu.example:8443") is None
        assert probe_target_allowed(cfg, "both", "http://10.0.0.5:8188") is not None

    def test_an_explicit_list_replaces_the_targets(self, cfg: Config) -> None:
        """allow on a module with credentials is the whole list: the targets' hosts are not added to it."""
        assert probe_target_allowed(cfg, "listed", "http://probe-only.example") is None
        assert probe_target_allowed(cfg, "listed", "http://10.0.0.5:8188") == "target not in modules.listed.allow"

    def test_a_module_without_credentials_stays_open(self, cfg: Config) -> None:
        assert probe_target_allowed(cfg, "open", "http://evil.example") is None

    def test_reasons_never_hold_the_url(self, cfg: Config) -> None:
        for module in ("proxy", "both", "listed"):
            reason = probe_target_allowed(cfg, module, f"http://u:{SECRET}@evil.example:1")
            assert reason is not None and SECRET not in reason and "evil" not in reason


class TestEntries:
    def test_canonical_forms(self) -> None:
        """Entries are stored lowercase, IDNA-encoded, IPv6 compressed, single addresses without /32."""
        cfg = config(probe={"allow": ["GPU-1.Example.NET", "Bücher.example:80", "10.0.0.1/32", "10.0.0.0/8",
                                      "[FD00:0::1]:8188", "fd00:0::2", "FD00::/8", " 10.0.0.7:9 "]})
        assert cfg.probe.allow == ("gpu-1.example.net", "xn--bcher-kva.example:80", "10.0.0.1", "10.0.0.0/8",
                                   "[fd00::1]:8188", "fd00::2", "fd00::/8", "10.0.0.7:9")
        assert Config.model_validate(cfg.model_dump()) == cfg

    @pytest.mark.parametrize(
        ("entry", "problem"),
        [
            ("http://gpu-1", "expected a host, host:port or network, not a URL"),
            ("10.0.0.5/8", "not a network: 10.0.0.5/8 has host bits set"),
            ("10.0.0.0/33", "not a network: '10.0.0.0/33' does not appear to be an IPv4 or IPv6 network"),
            ("gpu-1:0", "invalid port"),
            ("gpu-1:99999", "invalid port"),
            ("gpu 1", "not a valid host name"),
            ("gpu%41", "not a valid host name"),
            ("010.0.0.1", "not a valid IP address or host name"),
            ("2130706433", "not a valid IP address or host name"),
            ("[::1", "not an IPv6 address (write one with a port as [fd00::1]:8188)"),
            ("", "must not be empty"),
        ],
    )
    def test_invalid_entries(self, tmp_path: Path, entry: str, problem: str) -> None:
        """Each bad entry is reported at its index, with what is wrong."""
        shown = f" (got {entry!r})"
        assert problems(tmp_path, f'[probe]\nallow = ["{entry}"]\n') == [f"probe.allow[0]: {problem}{shown}"]
        assert problems(tmp_path, f'[modules.m]\nallow = ["{entry}"]\n') == [f"modules.m.allow[0]: {problem}{shown}"]

    def test_bounds(self, tmp_path: Path) -> None:
        """At most 1000 entries of at most 300 characters."""
        many = ", ".join(f'"h{i}"' for i in range(1001))
        assert problems(tmp_path, f"[probe]\nallow = [{many}]\n") == ["probe.allow: must have at most 1000 entries"]
        assert problems(tmp_path, f'[probe]\nallow = ["{"h" * 301}"]\n') == [
            "probe.allow[0]: must be at most 300 characters"
        ]
