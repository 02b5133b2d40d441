"""doctor's text renderer prints nothing a terminal would interpret, and no secret, whatever its report holds."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comfywatch.cli.doctor import CheckResult, Report, TargetReport, render_text
from comfywatch.cli.render import json_document, printable
from comfywatch.redact import MASK, register_secret

#: C0 but for newline, DEL, C1, bidi embeddings/overrides/isolates, and the surrogate range.
UNPRINTABLE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
# What rich writes itself when colour is on: SGR sequences only.
SGR = re.compile("\x1b\\[[0-9;]*m")
FORGED = "\x1b[2J\x1b[1;31mFAKE: all checks passed\r\n\u202e✓ ok\x9b0m\ud800"


def hostile_report() -> Report:
    """A report with terminal controls in every place a server string can reach."""
    target = TargetReport("gpu" + FORGED, "local", "http://127.0.0.1:8188/" + FORGED)
    target.add(CheckResult("server.version", "ok", "ComfyUI 0.3.64" + FORGED))
    target.add(CheckResult("workflow.lint", "fail", "1 problem" + FORGED, "fix it" + FORGED,
                           {"lines": ["node 4" + FORGED]}))
    target.add(CheckResult("canary.run", "fail", "canary failed" + FORGED, "hint" + FORGED,
                           {"table": "canary x: FAILED\n  - node 2" + FORGED + "\n  total 1.0 ms"}))
    return Report([target])


@pytest.mark.parametrize("color", [False, True], ids=["plain", "colour"])
def test_the_text_report_holds_no_terminal_control(color: bool) -> None:
    text = render_text(hostile_report(), color=color)
    assert UNPRINTABLE.findall(SGR.sub("", text)) == []
    assert ("\x1b[" in text) is color
    assert "FAKE: all checks passed" in text  # the words stay, only what a terminal acts on goes
    lines = text.splitlines()
    assert not any(SGR.sub("", line).startswith(("FAKE", "✓ ok")) for line in lines), text
    assert "  - node 2" in text and "      node 4" in text


def test_square_brackets_are_text_not_markup() -> None:
    """A server's "[red]" or "[/]" is printed as it is, never taken as rich markup (which could also raise)."""
    target = TargetReport("t", "local", "http://h")
    target.add(CheckResult("server.version", "ok", "ComfyUI [bold red]0.3.64[/] [/link]"))
    assert "ComfyUI [bold red]0.3.64[/] [/link]" in render_text(Report([target]), color=True)


@given(st.text())
def test_any_text_comes_out_as_one_printable_line(text: str) -> None:
    out = printable(text)
    assert UNPRINTABLE.search(out) is None and "\n" not in out
    out.encode("utf-8")


def test_a_secret_split_by_a_control_character_is_still_masked() -> None:
    """Cleaning turns the ESC into a space: the secret it separated must not appear joined up."""
    register_secret("split pass-2731")
    assert printable("got split\x1bpass-2731 back") == f"got {MASK} back"
    assert printable("got split\r\npass-2731 back") == f"got {MASK} back"


def test_the_json_document_is_ascii_and_scrubbed() -> None:
    register_secret('jsön"secret-88')
    document = json_document({"summary": 'server said jsön"secret-88' + FORGED, "n": 1})
    assert document.isascii() and "\x1b" not in document
    assert json.loads(document) == {"summary": "server said " + MASK + FORGED, "n": 1}
