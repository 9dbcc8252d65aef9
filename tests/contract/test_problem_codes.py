"""The ``Problem`` schema's ``code`` enum is exactly the codes keel's source can answer with.

The source is read, not imported: every ``code = "..."`` of an error class,
every ``code="..."`` argument, every literal code handed to ``problem_response``,
``problem_body``, ``send_problem``, ``PasswordRejected`` or a framing refusal,
and the codes of bare statuses (``STATUS_CODES``). A code passed on as a
variable is allowed only in the few places listed here, which forward a code
that is itself collected (an error's ``exc.code``, a status's code). The CLI
never answers HTTP, so its codes are not part of the contract.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from keel.api.contract import PROBLEM_CODES
from keel.api.problems import STATUS_CODES

SOURCE = Path(__file__).resolve().parents[2] / "src" / "keel"

# Calls whose positional argument at this index is a problem code.
_CODE_ARGUMENT = {
    "problem_response": 1,
    "problem_body": 1,
    "send_problem": 3,
    "PasswordRejected": 0,
    "_FramingError": 1,
}
# Codes forwarded, not made up: an error's own code, a status's code, a parameter.
_FORWARDED = {"exc.code", "code", "code_for_status(status)"}


@dataclass
class Codes:
    found: dict[str, str] = field(default_factory=dict)
    unknown: list[str] = field(default_factory=list)

    def literal(self, node: ast.expr, where: str) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            self.found.setdefault(node.value, where)
        elif ast.unparse(node) not in _FORWARDED:
            self.unknown.append(f"{where}: {ast.unparse(node)}")


def collect(sources: Iterable[tuple[str, str]]) -> Codes:
    """The problem codes in ``(name, text)`` sources."""
    codes = Codes()
    for name, text in sources:
        for node in ast.walk(ast.parse(text)):
            where = f"{name}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.ClassDef):
                for statement in node.body:
                    if isinstance(statement, ast.Assign):
                        targets, value = statement.targets, statement.value
                    elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
                        targets, value = [statement.target], statement.value
                    else:
                        continue
                    if any(
                        isinstance(target, ast.Name) and target.id == "code" for target in targets
                    ):
                        codes.literal(value, f"{name}:{statement.lineno}")
            elif isinstance(node, ast.Call):
                for keyword in node.keywords:
                    if keyword.arg == "code":
                        codes.literal(keyword.value, where)
                func = node.func
                called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
                index = _CODE_ARGUMENT.get(called)
                if index is not None and len(node.args) > index:
                    codes.literal(node.args[index], where)
    return codes


def _keel_sources() -> Iterable[tuple[str, str]]:
    for path in sorted(SOURCE.rglob("*.py")):
        if "cli" not in path.relative_to(SOURCE).parts:
            yield str(path.relative_to(SOURCE)), path.read_text(encoding="utf-8")


def test_every_code_the_source_raises_is_in_the_enum_and_nothing_else() -> None:
    codes = collect(_keel_sources())
    assert codes.unknown == [], "a code is passed on that this test cannot follow"
    raised = set(codes.found) | set(STATUS_CODES.values())
    missing = {code: codes.found.get(code) for code in raised - PROBLEM_CODES}
    assert missing == {}, "raised but not in keel.api.contract.PROBLEM_CODES"
    assert PROBLEM_CODES - raised == set(), "in PROBLEM_CODES but raised nowhere"


def test_the_collector_finds_each_way_a_code_is_raised() -> None:
    source = """
class Gone(NotFound):
    code = "thing_gone"

class Base(KeelError):
    code: ClassVar[str] = "thing_base"

def route():
    raise InvalidInput("no", code="thing_invalid")
    problem_response(409, "thing_conflict")
    send_problem(send, scope, 400, "thing_framing")
    raise PasswordRejected("thing_password", "message")
    raise _FramingError(413, "thing_large", "too large")
    problem_response(400, some_variable)
"""
    codes = collect([("example.py", source)])
    assert set(codes.found) == {
        "thing_gone",
        "thing_base",
        "thing_invalid",
        "thing_conflict",
        "thing_framing",
        "thing_password",
        "thing_large",
    }
    assert codes.unknown == ["example.py:14: some_variable"]
