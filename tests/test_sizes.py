"""Size limits that keep modules to one job and functions readable (docs/layout.md).

A module past ~350 lines, or a function whose code (its body after the docstring) passes ~60 lines,
has usually grown a second job: split it along its jobs, as ``corl.modules.policy`` was.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "corl"
MODULE_LINES = 360
FUNCTION_LINES = 60


def body_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function's code: from its first statement after the docstring to its end."""
    body = function.body
    first = body[0]
    if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
        body = body[1:] or body
    return function.end_lineno - body[0].lineno + 1


def test_no_module_is_too_long():
    long = {str(path.relative_to(PACKAGE)): n for path in PACKAGE.rglob("*.py")
            if (n := len(path.read_text(encoding="utf-8").splitlines())) > MODULE_LINES}
    assert not long, f"modules over {MODULE_LINES} lines (split them by job): {long}"


def test_no_function_is_too_long():
    long = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and body_lines(node) > FUNCTION_LINES:
                long[f"{path.relative_to(PACKAGE)}:{node.name}"] = body_lines(node)
    assert not long, f"functions whose code passes {FUNCTION_LINES} lines: {long}"


def test_the_measure_counts_code_not_docstrings():
    source = 'def f():\n    """Doc\n\n    more.\n    """\n    a = 1\n    return a\n'
    assert body_lines(ast.parse(source).body[0]) == 2
