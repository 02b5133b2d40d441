"""One hint table: ``comfywatch doctor`` writes no hint of its own, every hint it shows comes from comfywatch.errors.

A hint in cli/doctor.py is the fourth positional argument of ``CheckResult(...)``, its ``hint=`` keyword, or a
value assigned to a name or attribute called ``hint``. It breaks the rule when the text it yields is written in
place: a string literal or an f-string, directly or as a branch of a conditional, an operand of ``+``/``%``, a
value of ``or``/``and``, or the receiver of a method call (``"...".format(...)``). A string elsewhere in the
expression is no hint text (``hint_for(Reason.OOM) if status == "warn" else None``).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from comfywatch.errors import Diagnosis

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "comfywatch"
DOCTOR = PACKAGE_DIR / "cli" / "doctor.py"
#: ``CheckResult(id, status, summary, hint, details)``
HINT_POSITION = 3


def _name(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return None


def hint_values(tree: ast.AST) -> Iterator[ast.expr]:
    """Every expression that gives a check its hint."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _name(node.func) == "CheckResult":
            if len(node.args) > HINT_POSITION:
                yield node.args[HINT_POSITION]
            yield from (keyword.value for keyword in node.keywords if keyword.arg == "hint")
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign) and node.value is not None:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(_name(target) == "hint" for target in targets):
                yield node.value


def written_in_place(expr: ast.expr) -> bool:
    """Whether *expr* can yield text written where it stands rather than read from a table."""
    match expr:
        case ast.Constant(value=str()) | ast.JoinedStr():
            return True
        case ast.IfExp(body=body, orelse=orelse):
            return written_in_place(body) or written_in_place(orelse)
        case ast.BinOp(left=left, right=right):
            return written_in_place(left) or written_in_place(right)
        case ast.BoolOp(values=values):
            return any(written_in_place(value) for value in values)
        case ast.Call(func=ast.Attribute(value=receiver)):
            return written_in_place(receiver)
    return False


def literal_hints(source: str) -> list[int]:
    """The lines of *source* where a hint is written in place."""
    return sorted(expr.lineno for expr in hint_values(ast.parse(source)) if written_in_place(expr))


def test_doctor_takes_every_hint_from_the_tables() -> None:
    """cli/doctor.py reads each hint from errors.py (HINTS through hint_for, TLS_HINTS, DIAGNOSIS_HINTS)."""
    source = DOCTOR.read_text(encoding="utf-8")
    assert sum(1 for _ in hint_values(ast.parse(source))) >= len(Diagnosis)  # the walker does see doctor's hints
    lines = literal_hints(source)
    assert not lines, f"cli/doctor.py writes hints in place (move them to errors.DIAGNOSIS_HINTS): lines {lines}"


def test_every_diagnosis_is_shown_somewhere() -> None:
    """No entry of the table is dead: the code names each Diagnosis outside errors.py."""
    named = {match for path in PACKAGE_DIR.rglob("*.py") if path.name != "errors.py"
             for match in re.findall(r"Diagnosis\.([A-Z_]+)", path.read_text(encoding="utf-8"))}
    assert {diagnosis.name for diagnosis in Diagnosis} - named == set()


@pytest.mark.parametrize("source", [
    'CheckResult("a", "warn", "s", "Do this.")',
    'CheckResult("a", "warn", "s", f"Is port {port} open?", {})',
    'CheckResult("a", "warn", "s", hint="Do this.")',
    'CheckResult("a", "warn", "s", "Do this." if low else None)',
    'CheckResult("a", "warn", "s", "Wait. " + DIAGNOSIS_HINTS[Diagnosis.EXPOSED])',
    'CheckResult("a", "warn", "s", table.get(key) or "Do this.")',
    'CheckResult("a", "warn", "s", "Is port {port} open?".format(port=port))',
    'hint = "Do this."',
    'check.hint = f"Do {this}."',
    'hint: str = "Do this."',
])
def test_a_hint_written_in_place_is_caught(source: str) -> None:
    """Each way of writing a hint's text in place is reported, at its line."""
    assert literal_hints("\n" + source) == [2]


@pytest.mark.parametrize("source", [
    'CheckResult("a", "warn", "s", DIAGNOSIS_HINTS[Diagnosis.EXPOSED], {"reason": "x"})',
    'CheckResult("a", "warn", "s", hint_for(Reason.OOM) if status == "warn" else None)',
    'CheckResult("a", "warn", "s", DIAGNOSIS_HINTS[Diagnosis.CPU_DEVICE].format(kind="cpu"))',
    'CheckResult("a", "ok", "s", details={"reason": "x"})',
    'check.hint = hint_for(failure.reason, cloud=True)',
    'summary = "Do this."',
])
def test_a_hint_from_a_table_passes(source: str) -> None:
    """Strings that are no hint text (ids, summaries, comparisons, format arguments) are not reported."""
    assert literal_hints(source) == []
