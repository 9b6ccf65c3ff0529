"""Loading a policy: reading the file, parsing its YAML strictly, validating it (pydantic, then
:func:`approvals.policy.validation.cross_references`), and naming each problem's line.

This is the one module of the policy package that reads a file (:func:`load_policy`); everything
else in it works on text or models already in memory.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from actions.registry import KINDS
from actions.spec import Loc
from approvals.policy.model import LoadedPolicy, Policy, PolicyError, PolicyIssue
from approvals.policy.validation import cross_references


def _field_name(loc: Iterable[int | str]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _node_line(root: yaml.Node | None, loc: Sequence[int | str]) -> int | None:
    """The 1-based line of the YAML node at ``loc``, or of its nearest existing ancestor."""
    node = root
    if node is None:
        return None
    line = node.start_mark.line + 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    child = value
                    line = key.start_mark.line + 1
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's SafeLoader, except that a key given twice in one mapping is an error (YAML 1.2
    forbids it; PyYAML would silently keep the last one, and a policy must never surprise)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _value in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"the key '{key}' is given twice",
                    key_node.start_mark,
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def parse_policy(text: str | bytes, *, source: str = "policy.yml") -> LoadedPolicy:
    """Validate policy YAML ``text``. Raises :class:`PolicyError` naming each bad field and line."""
    raw = text.encode() if isinstance(text, str) else text
    digest = hashlib.sha256(raw).hexdigest()
    try:
        root = yaml.compose(raw.decode(), Loader=_StrictLoader)
        data = yaml.load(raw.decode(), Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        context = exc.context
        opened = exc.context_mark
        if context and opened is not None and (mark is None or opened.line != mark.line):
            context = f"{context} started on line {opened.line + 1}"
        what = "; ".join(part for part in (context, exc.problem) if part)
        raise PolicyError(source, [PolicyIssue(line, "(yaml)", what)]) from exc
    except yaml.YAMLError as exc:
        raise PolicyError(source, [PolicyIssue(None, "(yaml)", str(exc))]) from exc
    except UnicodeDecodeError as exc:
        raise PolicyError(source, [PolicyIssue(None, "(file)", "not UTF-8 text")]) from exc
    if not isinstance(data, dict):
        raise PolicyError(source, [PolicyIssue(1, "(top level)", "the policy must be a mapping")])
    try:
        policy = Policy.model_validate(data)
    except ValidationError as exc:
        issues = [
            PolicyIssue(_node_line(root, err["loc"]), _field_name(err["loc"]), err["msg"])
            for err in exc.errors()
        ]
        raise PolicyError(source, issues) from exc
    problems = cross_references(policy)
    if problems:
        raise PolicyError(
            source,
            [PolicyIssue(_node_line(root, loc), _field_name(loc), msg) for loc, msg in problems],
        )
    rule_lines = tuple(_node_line(root, ("rules", i)) or 0 for i in range(len(policy.rules)))
    lines: dict[Loc, int] = {}
    for name in policy.groups:
        lines[("groups", name)] = _node_line(root, ("groups", name)) or 0
    for i in range(len(policy.freezes)):
        lines[("freezes", i)] = _node_line(root, ("freezes", i)) or 0
    if policy.agents:
        lines[("agents",)] = _node_line(root, ("agents",)) or 0
    for spec in KINDS:  # each entry of a kind's top-level sections (runbooks.<name>)
        for key in spec.policy_settings.model_fields if spec.policy_settings else ():
            for entry in getattr(policy, key, None) or ():
                if isinstance(entry, str):
                    lines[(key, entry)] = _node_line(root, (key, entry)) or 0
    return LoadedPolicy(
        policy=policy, sha256=digest, source=source, rule_lines=rule_lines, lines=lines
    )


def load_policy(path: str | Path) -> LoadedPolicy:
    """Read and validate the policy at ``path``.

    Raises :class:`PolicyError` when the file is missing, unreadable or invalid; its message names
    the file, the line and the field.
    """
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise PolicyError(
            str(p), [PolicyIssue(None, "(file)", f"cannot read the policy: {exc.strerror}")]
        ) from exc
    return parse_policy(raw, source=str(p))
