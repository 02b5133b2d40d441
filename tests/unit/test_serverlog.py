"""ComfyUI's start-up log: import failures from the recordings, and hostile logs bounded."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comfywatch.errors import ParseError
from comfywatch.parse.serverlog import MAX_FAILURES, ImportFailure, _cannot_import, parse_server_log
from tests.fixtures import load_json


def _log(*messages: str) -> dict[str, Any]:
    return {"entries": [{"t": "2026-12-04T13:08:31.756180", "m": m} for m in messages], "size": {"cols": 80}}


def test_the_recorded_failing_pack_and_the_built_in_extras() -> None:
    log = parse_server_log(load_json("internal_logs_raw_import_failed.json"))
    assert log.startup_seen and log.imported == 2  # websocket_image_save.py and cw_test_nodes
    assert log.custom_failures == (ImportFailure("broken_pack", False, "No module named 'does_not_exist_module'"),)
    assert log.failures[1:] == (ImportFailure("nodes_audio.py", True, "No module named 'torchaudio'"),
                                ImportFailure("nodes_audio_encoder.py", True, "No module named 'torchaudio'"))


def test_the_recorded_healthy_server_has_only_its_optional_audio_nodes_missing() -> None:
    log = parse_server_log(load_json("internal_logs_raw.json"))
    assert log.startup_seen and log.imported == 1 and log.custom_failures == ()
    assert {f.pack for f in log.failures} == {"nodes_audio.py", "nodes_audio_encoder.py"}


def test_a_log_whose_start_up_scrolled_out_says_nothing() -> None:
    log = parse_server_log(_log("got prompt\n", "Prompt executed in 0.01 seconds\n"))
    assert (log.startup_seen, log.failures, log.imported) == (False, (), 0)


def test_a_failed_row_without_its_cannot_import_line_and_windows_paths() -> None:
    log = parse_server_log(_log(
        "Cannot import C:\\ComfyUI\\custom_nodes\\win_pack module for custom nodes: DLL load failed\n",
        "\nImport times for custom nodes:\n",
        "   0.1 seconds (IMPORT FAILED): C:\\ComfyUI\\custom_nodes\\win_pack\n",
        "   0.0 seconds (IMPORT FAILED): /srv/comfy/custom_nodes/other_pack/\n",
        "   0.2 seconds: /srv/comfy/custom_nodes/single_file.py\n",
        "\n",
        "   0.0 seconds (IMPORT FAILED): /srv/comfy/custom_nodes/after_the_table\n",
    ))
    assert log.failures == (ImportFailure("other_pack", False, None),
                            ImportFailure("win_pack", False, "DLL load failed"))
    assert log.imported == 1


def test_hostile_logs_are_bounded_and_cleaned() -> None:
    rows = "".join(f"   0.0 seconds (IMPORT FAILED): /x/custom_nodes/p{i:05d}\n" for i in range(100_000))
    log = parse_server_log(_log("Import times for custom nodes:\n" + rows))
    assert len(log.failures) == MAX_FAILURES
    evil = parse_server_log(_log(
        "Cannot import /x/custom_nodes/\x1b[31mred\ud800 module for custom nodes: " + "E" * 10_000 + "\x07\n"))
    (failure,) = evil.failures
    assert failure.pack == " [31mred\ufffd" and failure.error is not None and len(failure.error) <= 300
    assert "\x07" not in failure.error


@pytest.mark.parametrize("body", [[], "log", None, {"entries": "x"}])
def test_a_body_of_the_wrong_shape_is_a_parse_error(body: object) -> None:
    with pytest.raises(ParseError):
        parse_server_log(body)


def test_entries_of_the_wrong_shape_are_skipped() -> None:
    assert parse_server_log({"entries": [1, None, {"m": 3}, {"t": "x"}]}).failures == ()


def test_a_line_repeating_cannot_import_is_matched_in_linear_time() -> None:
    """Lines of 16.8 MB repeating "Cannot import " (alone, or after the " module for custom nodes: " suffix)
    are rejected, and one ending in the suffix is matched, each within pytest-timeout's 120 s.

    Not a timing test: a regex search retrying ``(.+?)`` from every "Cannot import " is quadratic (7 s for
    140 kB where measured), so at 120 times the length it would take about 28 hours, some 800 times the
    timeout, while the two linear scans take milliseconds. The parser cuts its own lines at 2,000 characters,
    too short for such a margin, so the line matcher is called directly."""
    repeated = "Cannot import " * 1_200_000
    assert _cannot_import(repeated) is None
    assert _cannot_import(" module for custom nodes: " + repeated) is None
    # the first "Cannot import " reaches the suffix: the path is everything up to it, as the lazy group had it
    matched = _cannot_import(repeated + "/x module for custom nodes: boom")
    assert matched == (repeated[len("Cannot import "):] + "/x", "boom")


# The pattern the parser used to search each line with: _cannot_import must give the same groups.
_REFERENCE = re.compile(r"Cannot import (.+?) module for custom nodes: (.*)")
_FRAGMENTS = ["Cannot import ", "Cannot import", " module for custom nodes: ", "module for custom nodes:",
              " module for custom nodes:", "/srv/custom_nodes/pack", "comfy_extras/nodes_audio.py", " ", "x", "é",
              "\r", "\t", ": "]


@given(st.lists(st.sampled_from(_FRAGMENTS), max_size=12).map("".join))
def test_cannot_import_lines_match_as_the_regex_search_did(line: str) -> None:
    """For any line (the parser's lines never hold "\\n") made of the message's pieces, _cannot_import
    returns the (path, error) groups of the regex search it replaces, or None where that found nothing."""
    reference = _REFERENCE.search(line)
    assert _cannot_import(line) == (reference.groups() if reference is not None else None)
