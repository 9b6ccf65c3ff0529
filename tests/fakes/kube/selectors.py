"""``labelSelector`` and ``fieldSelector`` of lists, as the API server parses them."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import bad_request
from .registry import Obj

_SET_SELECTOR = re.compile(r"^\s*([^\s!=]+)\s+(in|notin)\s+\((.*)\)\s*$")


def _split_selector(selector: str) -> list[str]:
    """Split on commas that are not inside ``( )``."""
    parts, depth, current = [], 0, ""
    for char in selector:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


@dataclass(frozen=True)
class _Requirement:
    """One selector term: ``key`` compared with ``op`` (=, !=, in, notin, exists, !) to values."""

    key: str
    op: str
    values: frozenset[str] = frozenset()

    def matches(self, value: str | None) -> bool:
        if self.op in ("=", "in"):
            return value in self.values
        if self.op in ("!=", "notin"):
            return value not in self.values
        if self.op == "exists":
            return value is not None
        return value is None  # "!"


def _parse_label_selector(selector: str) -> list[_Requirement]:
    requirements = []
    for term in _split_selector(selector):
        set_match = _SET_SELECTOR.match(term)
        if set_match:
            key, op, raw = set_match.groups()
            values = frozenset(v.strip() for v in raw.split(",") if v.strip())
            requirements.append(_Requirement(key, op, values))
        elif "!=" in term:
            key, value = (part.strip() for part in term.split("!=", 1))
            requirements.append(_Requirement(key, "!=", frozenset({value})))
        elif "=" in term:
            key, value = (part.strip() for part in re.split("==?", term, maxsplit=1))
            requirements.append(_Requirement(key, "=", frozenset({value})))
        elif re.fullmatch(r"!\s*[A-Za-z0-9./_-]+", term):
            requirements.append(_Requirement(term[1:].strip(), "!"))
        elif re.fullmatch(r"[A-Za-z0-9./_-]+", term):
            requirements.append(_Requirement(term, "exists"))
        else:
            raise bad_request(f"unable to parse requirement: {term!r}")
    return requirements


def label_selector_matcher(selector: str) -> Callable[[Mapping[str, str]], bool]:
    """A matcher for ``a=b,c==d,e!=f,g,!h,i in (x,y),j notin (z)``; raises ApiError 400."""
    requirements = _parse_label_selector(selector)

    def matches(labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels.get(r.key)) for r in requirements)

    return matches


def _field_value(obj: Obj, path: str) -> str:
    node: Any = obj
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return "" if node is None else str(node)


def field_selector_matcher(selector: str) -> Callable[[Obj], bool]:
    """A matcher for ``metadata.name=x,metadata.namespace!=y`` (=, == and !=)."""
    requirements = []
    for term in _split_selector(selector):
        match = re.fullmatch(r"([A-Za-z0-9.]+)\s*(!=|==|=)\s*(.*)", term)
        if not match:
            raise bad_request(f"invalid selector: '{selector}'; can't understand '{term}'")
        path, op, value = match.groups()
        requirements.append(_Requirement(path, "!=" if op == "!=" else "=", frozenset({value})))

    def matches(obj: Obj) -> bool:
        return all(r.matches(_field_value(obj, r.key)) for r in requirements)

    return matches


def label_selector_string(selector: Mapping[str, Any] | None) -> str:
    """A ``LabelSelector`` rendered as the API server does (``Scale.status.selector``)."""
    if not selector:
        return ""
    terms = [f"{k}={v}" for k, v in selector.get("matchLabels", {}).items()]
    for expression in selector.get("matchExpressions", []):
        key, op = expression["key"], expression["operator"]
        values = ",".join(sorted(expression.get("values", [])))
        terms.append(
            {
                "In": f"{key} in ({values})",
                "NotIn": f"{key} notin ({values})",
                "Exists": key,
                "DoesNotExist": f"!{key}",
            }[op]
        )
    return ",".join(sorted(terms))
