"""comfywatch.config.toml_bounds: a line with a very long dotted key is refused before tomllib reads it; dots in
strings, comments and numbers are not key parts."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from comfywatch.config import ConfigError, load_config
from comfywatch.config.toml_bounds import MAX_DOTS_PER_LINE, dotted_line_problem

REPO = Path(__file__).resolve().parents[2]
LIMIT = MAX_DOTS_PER_LINE
PROBLEM = f"more than {LIMIT} dots outside strings, comments and numbers"

#: One key part each way TOML spells one.
PARTS = st.sampled_from(["a", "k_1", "9", '"quoted.part"', "'lit.eral'", '"esc\\".aped"'])


def key(parts: list[str]) -> str:
    return ".".join(parts)


@pytest.mark.parametrize("path", ["comfywatch.example.toml", "pyproject.toml"])
def test_the_repositorys_own_toml_passes(path: str) -> None:
    assert dotted_line_problem((REPO / path).read_text(encoding="utf-8")) is None


@pytest.mark.parametrize("text", [
    "a" + ".a" * LIMIT + " = 1\n",
    "[" + ".".join(["t"] * (LIMIT + 1)) + "]\n",
    'url = "' + "a." * 10_000 + '"\n',
    "url = '" + "a." * 10_000 + "'\n",
    'text = """\n' + "a.\n" * 1000 + "." * 10_000 + '\\""" still. inside\n"""\n',
    "text = '''" + "." * 10_000 + "'''\n",
    "# " + "." * 10_000 + "\n",
    "buckets = [" + ", ".join(["0.5", "1_000.25", "1e-3", "2.5e+3"] * 100) + "]\n",
    "when = [" + ", ".join(["1979-05-27T07:32:00.999999-07:00"] * 200) + "]\n",
], ids=["64-dots", "a-64-dot-table-header", "a-basic-string", "a-literal-string", "a-multiline-string",
        "a-multiline-literal", "a-comment", "floats", "times"])
def test_what_is_no_long_key_passes(text: str) -> None:
    """A key of 65 parts (64 dots), and dots in strings, comments, floats and times, pass; each text is TOML."""
    tomllib.loads(text)
    assert dotted_line_problem(text) is None


@pytest.mark.parametrize("text", [
    "a" + ".a" * (LIMIT + 1) + " = 1\n",
    "[" + ".".join(["t"] * (LIMIT + 2)) + "]\n",
    "x = {" + ".".join(["a"] * (LIMIT + 2)) + " = 1}\n",
    ".".join(["1"] * (LIMIT + 2)) + " = 1\n",
    ".".join(['"q"'] * (LIMIT + 2)) + " = 1\n",
    "a" + " . a" * (LIMIT + 1) + " = 1\n",
], ids=["bare", "a-table-header", "an-inline-table", "digits", "quoted", "spaced"])
def test_a_key_of_more_parts_is_refused_with_its_line(text: str) -> None:
    """Every way of spelling a long key is caught, and the problem names the line."""
    tomllib.loads(text)
    assert dotted_line_problem('name = "x"\n# a comment.\n' + text) == f"line 3: {PROBLEM}"


def test_lines_are_counted_across_multiline_strings() -> None:
    text = 'a = """\n.\n.\n"""\nb = \'\'\'\n\n\'\'\'\n' + "k" + ".k" * (LIMIT + 1) + " = 1\n"
    tomllib.loads(text)
    assert dotted_line_problem(text) == f"line 8: {PROBLEM}"


@given(st.lists(PARTS, min_size=1, max_size=LIMIT + 8), st.sampled_from([" = 1", " = 0.5", ' = "a.b"']))
def test_a_keys_parts_decide(parts: list[str], value: str) -> None:
    """A key is refused exactly when it has more than 64 dots: its parts, however spelled, and its value do not
    matter."""
    text = key(parts) + value + "  # a.b.c\n"
    tomllib.loads(text)
    expected = None if len(parts) - 1 <= LIMIT else f"line 1: {PROBLEM}"
    assert dotted_line_problem(text) == expected


@pytest.mark.parametrize("text", [
    "a" + ".a" * 500_000 + " = 1\n",
    "'" * 2**20,
    "x = '" + "'a" * 2**19,
    'x = "' + "\\\\" * 2**18,
    "1." * 2**19,
])
def test_a_mebibyte_of_hostile_text_is_read_once(text: str) -> None:
    """Unterminated strings, runs of quotes or backslashes and a mebibyte key: each is answered (the scan
    never rescans the rest of the text per character)."""
    assert dotted_line_problem(text) in {None, f"line 1: {PROBLEM}"}


def test_load_config_refuses_the_file_before_tomllib_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "comfywatch.toml"
    path.write_text("[[targets]]\nname = \"a\"\nurl = \"http://127.0.0.1:1\"\nlabels" + ".a" * 20_000 + " = 1\n",
                    encoding="utf-8")
    with pytest.raises(ConfigError) as refused:
        load_config(path)
    assert refused.value.problems == [f"invalid TOML: line 4: {PROBLEM}"]
