"""List answers are pages: ``/ops status``, ``/ops grants`` and the App Home sections show a
bounded number of entries, say how many there are, and how to see the next ones."""

from __future__ import annotations

import json

import pytest

from approvals.paging import Page, page_window
from bot import grant_blocks
from bot.blocks import LIST_ENTRY_LIMIT, status_list
from tests.helpers.grant_views import NOW, grant, request
from tests.helpers.request_views import make_view


def test_a_page_knows_where_it_stands() -> None:
    page = Page(("a", "b"), total=5, number=2, size=2)
    assert (list(page), len(page), page[0], page.offset, page.pages, page.more) == (
        ["a", "b"],
        2,
        "a",
        2,
        3,
        True,
    )
    assert not Page(("e",), total=5, number=3, size=2).more
    assert Page((), total=0).pages == 1
    assert page_window(3, 20) == (40, 20)
    for number, size in ((0, 20), (100_001, 20), (1, 0)):
        with pytest.raises(ValueError, match="page"):
            page_window(number, size)


def test_status_list_of_one_page_is_as_before() -> None:
    text = status_list(Page((make_view(id=3), make_view(id=2)), total=2, size=5))
    assert text.count("*Request #") == 2
    assert "Showing" not in text
    assert status_list(Page((), total=0, size=5)).startswith("You have no requests yet.")


def test_status_list_says_how_many_and_how_to_see_more() -> None:
    views = tuple(make_view(id=i) for i in range(100, 95, -1))
    first = status_list(Page(views, total=1234, number=1, size=5))
    assert first.splitlines()[-1] == (
        "Showing 1 to 5 of 1,234 requests, newest first. Next: `/ops status --page 2`."
    )
    middle = status_list(Page(views, total=1234, number=3, size=5))
    assert middle.splitlines()[-1] == (
        "Showing 11 to 15 of 1,234 requests, newest first. Next: `/ops status --page 4` · "
        "previous: `/ops status --page 2`."
    )
    last = status_list(Page(views[:4], total=1234, number=247, size=5))
    assert last.splitlines()[-1] == (
        "Showing 1,231 to 1,234 of 1,234 requests, newest first. "
        "previous: `/ops status --page 246`."
    )
    assert status_list(Page((), total=1234, number=300, size=5)) == (
        "There is no page 300: the 1,234 requests fill 247 page(s) of 5."
    )


def test_a_long_error_is_cut_so_a_page_stays_small() -> None:
    failed = make_view(status="failed", error="x" * 50_000)
    text = status_list(Page((failed,) * 5, total=5, size=5))
    assert len(text) <= 5 * LIST_ENTRY_LIMIT + 4
    assert text.count("… (cut)") == 5


def test_grants_list_of_a_page() -> None:
    grants = tuple(grant(id=i) for i in range(21, 41))
    text = grant_blocks.grants_list(Page(grants, total=10_000, number=2), NOW, everyone=True)
    lines = text.splitlines()
    assert lines[0] == "Active grants:"
    assert len(lines) == 22
    assert lines[-1] == (
        "Showing 21 to 40 of 10,000 active grants, the soonest to end first. "
        "Next: `/ops grants --page 3` · previous: `/ops grants --page 1`."
    )
    assert len(text) < 4_000
    assert grant_blocks.grants_list(Page((), total=10_000, number=600), NOW) == (
        "There is no page 600: the 10,000 active grants fill 500 page(s) of 20."
    )
    assert grant_blocks.grants_list(Page((), total=0), NOW) == "You have no active grants."


def test_home_view_says_how_many_there_are_beyond_what_it_shows() -> None:
    grants = Page(tuple(grant(id=i) for i in range(20)), total=40)
    mine = Page(tuple(request(i, "U0DEV1") for i in range(20)), total=300)
    waiting = Page(tuple(request(i) for i in range(300, 320)), total=150)
    view = grant_blocks.home_view(grants, mine, waiting, NOW)
    assert len(view["blocks"]) <= 100
    notes = [
        b["elements"][0]["text"]
        for b in view["blocks"]
        if b["type"] == "context" and b["elements"][0]["text"].startswith("Showing")
    ]
    # issue 13: what waits on me first, ten a page, with Next to the following ten
    assert notes == [
        "Showing 1 to 10 of 150 requests waiting on you, oldest first.",
        "Showing 10 of 300 pending requests, the oldest; `/ops status` pages through your "
        "requests.",
        "Showing 10 of 40 active grants, the soonest to end; `/ops grants` pages through them.",
    ]
    assert json.dumps(view).count('"grant_extend"') == 10
    assert json.dumps(view).count('"home_page_next"') == 1
    # what fits is shown without a count line
    small = grant_blocks.home_view(Page((grant(),), total=1), [], [], NOW)
    assert "Showing" not in json.dumps(small)
