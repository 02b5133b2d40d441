"""Every option of every ``comfywatch`` subcommand explains itself in ``--help``."""

from __future__ import annotations

import argparse

from comfywatch.cli.main import build_parser

#: The simulator parses its own options (``comfywatch simulate --help`` is its parser's).
OWN_PARSERS = {"simulate"}


def parsers() -> dict[str, argparse.ArgumentParser]:
    top = build_parser()
    found = {"comfywatch": top}
    for action in top._actions:
        if isinstance(action, argparse._SubParsersAction):
            found |= {name: sub for name, sub in action.choices.items() if name not in OWN_PARSERS}
    return found


def test_every_option_has_a_help_line() -> None:
    """No option or positional is listed without a description (hidden ones excepted)."""
    missing = [
        f"{name} {'/'.join(action.option_strings) or action.dest}"
        for name, parser in parsers().items()
        for action in parser._actions
        if action.help != argparse.SUPPRESS and not (action.help or "").strip()
    ]
    assert missing == []


def test_the_walk_covers_every_subcommand() -> None:
    """The check above sees each subcommand (a renamed one cannot slip past it)."""
    assert set(parsers()) == {"comfywatch", "run", "check-config", "doctor", "canary", "diff", "version"}
