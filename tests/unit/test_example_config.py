"""comfywatch.example.toml: valid as shipped, every option present, and every commented-out value valid."""

from __future__ import annotations

import re
import tomllib
from collections import defaultdict
from pathlib import Path

from pydantic import BaseModel

from comfywatch.config import Config, Defaults, ServerConfig, load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "comfywatch.example.toml"

#: A commented-out table header or ``key = value`` line (prose comments never start like either).
_SETTING = re.compile(r"^# (\[\[?[a-z_.]+\]\]?(\s+#.*)?|[a-z_]+ = .*)$")


def uncommented() -> Config:
    """The example with every commented-out setting switched on, validated (secret files are not read)."""
    lines = [line[2:] if _SETTING.match(line) else line for line in EXAMPLE.read_text(encoding="utf-8").splitlines()]
    return Config.model_validate(tomllib.loads("\n".join(lines)))


def fields_set_by_model(model: BaseModel, found: dict[type[BaseModel], set[str]]) -> dict[type[BaseModel], set[str]]:
    """For each config model class, the fields some instance of it got from the file."""
    found[type(model)] |= model.model_fields_set
    for name in type(model).model_fields:
        value = getattr(model, name)
        children = value.values() if isinstance(value, dict) else value if isinstance(value, tuple) else [value]
        for child in children:
            if isinstance(child, BaseModel):
                fields_set_by_model(child, found)
    return found


def test_as_shipped_it_is_the_built_in_configuration() -> None:
    """Copied unchanged, the example watches what comfywatch watches with no file at all."""
    assert load_config(EXAMPLE, {}) == load_config(None, {})


def test_every_commented_out_setting_is_valid() -> None:
    """Uncommenting any setting (here: all of them at once) gives a valid configuration."""
    config = uncommented()
    assert [t.name for t in config.targets] == ["local", "cloud"]
    assert set(config.modules) == {"local"}


def test_every_option_is_in_the_example() -> None:
    """Each field of each config table appears in the example (a new option must be documented there)."""
    found = fields_set_by_model(uncommented(), defaultdict(set))
    missing = {cls.__name__: sorted(set(cls.model_fields) - found[cls]) for cls in found}
    # A plain-text key is refused unless allow_plaintext_api_key says otherwise: the example only explains it.
    assert missing.pop("TargetConfig") == ["api_key"]
    assert "(api_key = \"...\") is refused unless allow_plaintext_api_key is true" in EXAMPLE.read_text()
    assert all(not fields for fields in missing.values()), missing
    assert {cls.__name__ for cls in found} == {
        "Config", "ServerConfig", "Defaults", "MetricsConfig", "StatusConfig", "TargetConfig", "CanaryConfig",
        "VerifyConfig", "DiscoveryConfig",
        "ProbeModule", "ProbeConfig", "WorkflowWatch",
    }


def test_commented_out_values_of_server_and_defaults_are_the_defaults() -> None:
    """Where the example says "default", it is the default (web_config_file has none: it shows an example)."""
    config = uncommented()
    assert config.defaults == Defaults()
    assert config.server.model_copy(update={"web_config_file": None}) == ServerConfig()
