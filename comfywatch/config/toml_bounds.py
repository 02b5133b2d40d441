"""What tomllib is not given: a line with a very long dotted key.

tomllib's work per dotted key grows with the square of its parts: one key of 20,000 parts (40 KB) takes it
about 6 s, and a configuration file may hold 1 MiB; a reload would wait on it. Keys cannot span lines in TOML,
so a bound on the dots of each line outside strings and comments bounds every key's parts. A number's own dot
(``0.5``, a time's fraction) is not counted: a line of many numbers is no long key.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["MAX_DOTS_PER_LINE", "dotted_line_problem"]

#: Dots outside strings and comments per line: a comfywatch key has a handful of parts.
MAX_DOTS_PER_LINE: Final = 64

_NEXT = re.compile(r"[\"'#\n.]")
_BASIC_END = re.compile(r'["\\\n]')
_LITERAL_END = re.compile(r"['\n]")
_MULTILINE_BASIC_END = re.compile(r'"""|\\')


def _is_number_dot(text: str, at: int) -> bool:
    """Whether the dot at *at* is a number's (``1.5``): digits on both sides and no other dot joined to them.
    A key may be digits too (``1.2.3 = …``), so a run of digit groups joined by dots counts."""
    left = at
    while left > 0 and (text[left - 1].isdigit() or text[left - 1] == "_"):
        left -= 1
    right = at + 1
    while right < len(text) and (text[right].isdigit() or text[right] == "_"):
        right += 1
    if left == at or right == at + 1:
        return False
    return not ((left > 0 and text[left - 1] == ".") or (right < len(text) and text[right] == "."))


def _basic_string_end(text: str, start: int) -> int:
    """The index after a ``"…"`` string whose content starts at *start* (at its line's end if unterminated)."""
    at = start
    while (found := _BASIC_END.search(text, at)) is not None:
        if found.group() == "\\":
            at = found.end() + 1
        elif found.group() == '"':
            return found.end()
        else:
            return found.start()
    return len(text)


def _multiline_basic_end(text: str, start: int) -> int:
    at = start
    while (found := _MULTILINE_BASIC_END.search(text, at)) is not None:
        if found.group() == "\\":
            at = found.end() + 1
        else:
            return found.end()
    return len(text)


def _found_or_end(text: str, index: int, after: int) -> int:
    return len(text) if index < 0 else index + after


def dotted_line_problem(text: str) -> str | None:
    """A problem when a line of *text* has more than :data:`MAX_DOTS_PER_LINE` dots outside strings, comments and
    numbers; None otherwise. Linear in *text*: each character is looked at a bounded number of times."""
    line, dots, at = 1, 0, 0
    while (found := _NEXT.search(text, at)) is not None:
        char, start = found.group(), found.start()
        if char == "\n":
            line, dots, at = line + 1, 0, start + 1
        elif char == "#":
            at = _found_or_end(text, text.find("\n", start), 0)
        elif char == ".":
            if not _is_number_dot(text, start):
                dots += 1
                if dots > MAX_DOTS_PER_LINE:
                    return f"line {line}: more than {MAX_DOTS_PER_LINE} dots outside strings, comments and numbers"
            at = start + 1
        else:
            if text.startswith(char * 3, start):
                if char == '"':
                    end = _multiline_basic_end(text, start + 3)
                else:
                    end = _found_or_end(text, text.find("'''", start + 3), 3)
                line += text.count("\n", start, end)
            elif char == '"':
                end = _basic_string_end(text, start + 1)
            else:
                closing = _LITERAL_END.search(text, start + 1)
                end = len(text) if closing is None else closing.end() if closing.group() == "'" else closing.start()
            at = end
    return None
