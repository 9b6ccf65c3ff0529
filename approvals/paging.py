"""Pages of long lists: what an answer shows of a list, and how long the whole list is.

Every read that lists things (``/ops status``, ``/ops grants``, the App Home sections) returns a
:class:`Page`, read with ``LIMIT``/``OFFSET`` and a ``COUNT`` in SQL, so that an answer stays the
same size however many rows the database holds.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from sqlalchemy import ColumnElement, Integer, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Session

T = TypeVar("T")

PAGE_SIZE = 20
"""Items per page when the caller does not say."""

MAX_PAGE = 100_000
"""The highest page number asked for that is read (a larger one is refused before SQL)."""

IN_CHUNK = 900
"""IDs per ``IN (…)`` list, under the 999 bound parameters of SQLite builds before 3.32."""


@dataclass(frozen=True)
class Page(Sequence[T]):
    """Items ``number`` (1-based) of a list cut in pages of ``size``; ``total`` is how many
    items the whole list holds. A page past the end has no items and the same ``total``."""

    items: tuple[T, ...]
    total: int
    number: int = 1
    size: int = PAGE_SIZE

    @overload
    def __getitem__(self, index: int) -> T: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[T]: ...

    def __getitem__(self, index: int | slice) -> T | Sequence[T]:
        return self.items[index]

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[T]:
        return iter(self.items)

    @property
    def offset(self) -> int:
        """How many items come before this page."""
        return (self.number - 1) * self.size

    @property
    def pages(self) -> int:
        """How many pages the whole list makes (at least 1)."""
        return max(1, -(-self.total // self.size))

    @property
    def more(self) -> bool:
        """True when a later page holds items."""
        return self.offset + len(self.items) < self.total


def page_window(number: int, size: int) -> tuple[int, int]:
    """``(offset, limit)`` of page ``number`` (1-based) of ``size`` items. Raises ``ValueError``
    for a page number below 1 or above :data:`MAX_PAGE`, or a size below 1."""
    if not 1 <= number <= MAX_PAGE:
        raise ValueError(f"page {number} is out of range (1 to {MAX_PAGE:,})")
    if size < 1:
        raise ValueError(f"a page holds at least one item, not {size}")
    return (number - 1) * size, size


def chunks(ids: Sequence[T], size: int = IN_CHUNK) -> Iterator[Sequence[T]]:
    """``ids`` cut in runs of at most ``size``, for ``IN (…)`` lists."""
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


def among(session: Session, column: Any, ids: Sequence[int]) -> ColumnElement[bool]:
    """SQL for "``column`` is one of ``ids``": ``IN (…)``, or on PostgreSQL ``= ANY(:ids)`` with
    one array parameter, because psycopg parses again, on every execution, a query text with
    hundreds of placeholders (it caches short ones only): a cost a batch of 200 grants would
    pay in every statement."""
    result: ColumnElement[bool]
    if session.get_bind().dialect.name == "postgresql":
        result = column == any_(bindparam(None, list(ids), type_=ARRAY(Integer), unique=True))
    else:
        result = column.in_(ids)
    return result
