"""The gate without Slack: a recording notifier, the fake cluster, the test database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select, update

from actions.restart import RESTARTED_AT
from approvals.gate import (
    STRANDED_AFTER,
    AlreadyDecided,
    NotAllowed,
    Rejected,
)
from approvals.lifecycle import Actor
from approvals.models import AuditEvent, Request, Status
from approvals.notifier import MessageRef, OpenedRefs, RequestView
from tests.helpers.gate import RecordingNotifier, World, restart
from tests.helpers.gate import world as world


def set_status(world: World, request_id: int, status: Status, updated_at: datetime) -> None:
    with world.sessions.begin() as session:
        session.execute(
            update(Request)
            .where(Request.id == request_id)
            .values(status=status.value, updated_at=updated_at)
        )


def test_times_come_from_the_injected_clock(world: World) -> None:
    view = world.gate.submit(restart())
    assert view.created_at == world.clock.now
    world.clock.now += timedelta(minutes=7)
    view = world.gate.approve(view.id, Actor("U0SRE1"))
    assert view.status == "executing"  # applied; its rollout is followed by a periodic job
    assert world.gate.follow_rollouts() == [view.id]
    view = world.gate.get(view.id)
    assert view.status == "succeeded"
    assert view.updated_at == world.clock.now
    obj = world.kube.get_object("apps/v1", "Deployment", "payments", "payments-api")
    assert obj is not None
    assert (
        obj["spec"]["template"]["metadata"]["annotations"][RESTARTED_AT] == "2026-11-21T03:07:00Z"
    )
    assert [e[1] for e in world.notifier.events] == [
        "opened",
        "approved",
        "executing",
        "succeeded",
    ]


def test_recover_executes_approved_and_marks_stale_executing_requests_unknown(
    world: World,
) -> None:
    first = world.gate.submit(restart()).id
    second = world.gate.submit(restart("cart", "checkout")).id
    third = world.gate.submit(restart()).id
    set_status(world, first, Status.APPROVED, world.clock.now)
    set_status(world, second, Status.EXECUTING, world.clock.now - timedelta(hours=1))
    set_status(world, third, Status.EXECUTING, world.clock.now - timedelta(seconds=30))

    assert sorted(world.gate.recover(stale_after=900)) == [first, second]
    assert world.gate.follow_rollouts() == [first]

    assert world.gate.get(first).status == "succeeded"
    interrupted = world.gate.get(second)
    assert interrupted.status == "unknown"
    assert interrupted.error is not None
    assert "it may have taken effect: check the target" in interrupted.error
    assert world.gate.get(third).status == "executing"  # maybe another live instance's
    patches = world.kube.requests_matching(method="PATCH")
    # each submit's preview dry-ran the restart; only the recovered approved one was applied
    assert [p.query.get("dryRun") for p in patches] == ["All", "All", "All", None]


def test_a_rule_nobody_but_the_requester_can_satisfy_is_rejected(world: World) -> None:
    # checkout needs two approvals from sre, which has two members; one of them is asking
    with pytest.raises(Rejected, match="not enough people other than you"):
        world.gate.submit(restart("cart", "checkout", requester="U0SRE1"))


def test_agents_cannot_approve(world: World) -> None:
    view = world.gate.submit(restart())
    with pytest.raises(NotAllowed, match="Automation cannot approve"):
        world.gate.approve(view.id, Actor("U0SRE1", kind="agent"))
    assert world.gate.get(view.id).status == "pending"


def test_the_requester_withdraws_with_deny(world: World) -> None:
    view = world.gate.submit(restart())
    assert world.gate.deny(view.id, Actor("U0DEV1")).status == "cancelled"
    with pytest.raises(AlreadyDecided, match="already cancelled"):
        world.gate.approve(view.id, Actor("U0SRE1"))


def test_an_unannounced_request_is_cancelled_and_audited(world: World) -> None:
    world.notifier.fail_open = True
    with pytest.raises(Rejected, match="channel_not_found"):
        world.gate.submit(restart())
    with world.sessions() as session:
        [request] = session.scalars(select(Request)).all()
        assert request.status == "cancelled"
        events = [e.event for e in session.scalars(select(AuditEvent).order_by(AuditEvent.id))]
    assert events == ["submitted", "announce_failed", "rejected"]
    # the preview's dry run only: nothing applied
    patches = world.kube.requests_matching(method="PATCH")
    assert [p.query.get("dryRun") for p in patches] == ["All"]


def test_an_event_is_handled_once_and_forgotten_after_a_day(world: World) -> None:
    assert world.gate.first_delivery("Ev1")
    assert not world.gate.first_delivery("Ev1")
    assert world.gate.first_delivery("Ev2")
    world.clock.now += timedelta(hours=23)
    assert world.gate.forget_events() == 0
    world.clock.now += timedelta(hours=2)
    assert world.gate.forget_events() == 2
    assert world.gate.first_delivery("Ev1")


def test_a_decision_before_the_approval_message_is_stored_still_updates_the_card(
    world: World,
) -> None:
    """Slack answers chat.postMessage, and a click on the new message can reach the bot before
    the message's reference is stored: the decision's own update then finds no message, so the
    storing of the reference updates the card (whichever comes second does)."""
    gate = world.gate

    class EarlyClick(RecordingNotifier):
        def request_opened(
            self,
            request: RequestView,
            *,
            approval_posted: Callable[[MessageRef], None] | None = None,
            thread_posted: Callable[[MessageRef], None] | None = None,
        ) -> OpenedRefs:
            ref = MessageRef("C0APPROVALS", f"{request.id}.1")
            gate.deny(request.id, Actor("U0SRE1"))  # the click lands before the ts is stored
            assert approval_posted is not None
            approval_posted(ref)
            return OpenedRefs(approval=ref, thread=None)

    notifier = EarlyClick()
    gate._notifier = notifier
    view = gate.submit(restart())
    assert view.status == "denied"
    assert view.approval == MessageRef("C0APPROVALS", f"{view.id}.1")
    assert notifier.events == [(view.id, "denied", "denied"), (view.id, "card", "denied")]


def test_no_extra_card_update_when_the_reference_is_stored_first(world: World) -> None:
    class InOrder(RecordingNotifier):
        def request_opened(
            self,
            request: RequestView,
            *,
            approval_posted: Callable[[MessageRef], None] | None = None,
            thread_posted: Callable[[MessageRef], None] | None = None,
        ) -> OpenedRefs:
            ref = MessageRef("C0APPROVALS", f"{request.id}.1")
            assert approval_posted is not None
            approval_posted(ref)
            return OpenedRefs(approval=ref, thread=None)

    notifier = InOrder()
    world.gate._notifier = notifier
    view = world.gate.submit(restart())
    world.gate.deny(view.id, Actor("U0SRE1"))
    assert notifier.events == [(view.id, "denied", "denied")]


def test_a_request_stranded_before_its_announcement_is_cancelled_and_its_requester_told(
    world: World,
) -> None:
    """A bot killed between filing a request and posting its approval message leaves it
    pending with no message; after STRANDED_AFTER seconds it is cancelled, never executed."""
    view = world.gate.submit(restart())
    with world.sessions.begin() as session:  # as a stop before the approval post leaves it
        request = session.get(Request, view.id)
        assert request is not None
        request.approval_ts = None
        request.approval_channel_id = None
    young = world.gate.submit(restart("cart", "checkout"))
    with world.sessions.begin() as session:
        request = session.get(Request, young.id)
        assert request is not None
        request.approval_ts = None
    world.clock.now += timedelta(seconds=STRANDED_AFTER - 1)
    assert world.gate.cancel_stranded() == []
    world.clock.now += timedelta(seconds=2)
    assert world.gate.recover() == [view.id, young.id]
    cancelled = world.gate.get(view.id)
    assert cancelled.status == "cancelled"
    assert cancelled.error is not None
    assert "nothing was changed" in cancelled.error
    assert (view.id, "cancelled", "cancelled") in world.notifier.events
    assert world.gate.cancel_stranded() == []  # once
    applied = world.kube.requests_matching("PATCH", "payments-api")
    assert [r for r in applied if "dryRun" not in r.query] == []
