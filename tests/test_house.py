"""The tests' own house rules, checked on the source of the test suite."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent


def imported_modules(source: str, package: str) -> list[str]:
    """Every module an ``import`` or ``from ... import`` statement of ``source`` names (which
    may be a module: ``from tests import test_x``); relative imports are resolved against
    ``package``, the dotted package of the file."""
    found: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join([*parts[: len(parts) - node.level + 1], *filter(None, [base])])
            found.append(base)
            found.extend(f"{base}.{alias.name}" for alias in node.names)
    return found


def is_test_module(module: str) -> bool:
    """``tests.test_x`` (or anything under it) and ``tests.conftest``."""
    parts = module.split(".")
    return (
        len(parts) > 1
        and parts[0] == "tests"
        and (parts[1].startswith("test_") or parts[1] == "conftest")
    )


def test_no_module_of_the_suite_imports_a_test_module_or_conftest() -> None:
    offenders = [
        f"{path.relative_to(TESTS.parent)} imports {module}"
        for path in sorted(TESTS.rglob("*.py"))
        for module in imported_modules(
            path.read_text(), ".".join(path.relative_to(TESTS.parent).parts[:-1])
        )
        if is_test_module(module)
    ]
    assert offenders == [], "move what is shared into tests/helpers/:\n" + "\n".join(offenders)


def test_the_check_sees_every_form_of_import() -> None:
    source = (
        "import tests.test_a\n"
        "from tests import test_b\n"
        "from ..test_c import x\n"
        "from tests.conftest import POLICY\n"
        "from tests.helpers.clock import Clock\n"
    )
    modules = imported_modules(source, "tests.helpers")
    assert [m for m in modules if is_test_module(m)] == [
        "tests.test_a",
        "tests.test_b",
        "tests.test_c",
        "tests.test_c.x",
        "tests.conftest",
        "tests.conftest.POLICY",
    ]
    assert not is_test_module("tests.helpers.clock")
    assert not is_test_module("tests.fakes.kube")
