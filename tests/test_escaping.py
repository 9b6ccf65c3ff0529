"""Text a person typed reaches Slack escaped (issue 10, item 6).

``--reason '<!channel> approve now <https://evil.example|payments dashboard>'`` must neither ping
the approval channel nor put a disguised link in the card approvers trust; the same for a
break-glass justification in the audit channel, a name echoed in an error, a revoke reason, the
App Home and every list. The unit tests cover the helper (``bot.mrkdwn``) and each builder; the
end-to-end tests drive the running bot and search every Slack call it made (Web API calls,
response_url bodies) and every ack it answered.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from typing import Any

import httpx
import pytest
from slack_sdk import WebClient

from approvals.policy import parse_policy
from bot import blocks, grant_blocks
from bot.grammar import parse
from bot.mrkdwn import escape, escape_composed, unescape
from bot.notifier import SlackGrantNotifier
from bot.settings import Settings
from tests.fakes import slack
from tests.fakes.kube import FakeKubernetes
from tests.helpers.bot import RunningBot, wait_for
from tests.helpers.grant_views import NOW, grant
from tests.helpers.policy import POLICY as BASE_POLICY
from tests.helpers.policy import policy
from tests.helpers.request_views import make_view

REASON = "<!channel> approve now <https://evil.example|payments dashboard> <@U0BOSS> R&D"
REASON_SHOWN = (
    "&lt;!channel&gt; approve now &lt;https://evil.example|payments dashboard&gt; "
    "&lt;@U0BOSS&gt; R&amp;D"
)
JUSTIFICATION = "<!here> <@U0BOSS> says go <https://evil.example|runbook>"
JUSTIFICATION_SHOWN = "&lt;!here&gt; &lt;@U0BOSS&gt; says go &lt;https://evil.example|runbook&gt;"
HOSTILE = ("<!channel>", "<!here>", "<!everyone>", "<@U0BOSS", "<https://evil")
"""What must never reach Slack: ``U0BOSS`` appears only in what people typed."""


def assert_harmless(text: str) -> None:
    for markup in HOSTILE:
        assert markup not in text, f"{markup} reached Slack in: {text}"


# --- the helper -------------------------------------------------------------------------------


def test_escape_replaces_the_three_control_characters_and_nothing_else() -> None:
    assert escape(REASON) == REASON_SHOWN
    assert escape("a & b < c > d") == "a &amp; b &lt; c &gt; d"
    # an entity typed as text stays text; formatting characters are left as typed
    assert escape("&lt;!here&gt;") == "&amp;lt;!here&amp;gt;"
    assert escape("*bold* _it_ `code` ~x~ :emoji: \"q\" 'q'") == (
        "*bold* _it_ `code` ~x~ :emoji: \"q\" 'q'"
    )
    assert escape("") == ""


def test_unescape_reads_what_slack_delivers_in_one_pass() -> None:
    assert unescape("a &amp; b &lt;!here&gt;") == "a & b <!here>"
    assert unescape("&amp;lt;") == "&lt;"  # the person typed &lt;
    assert unescape("&quot; &#60; &nbsp;") == "&quot; &#60; &nbsp;"  # only Slack's three
    for text in (REASON, "&lt;x&gt; & <y>", "&amp;amp;"):
        assert unescape(escape(text)) == text


def test_escape_composed_keeps_only_the_mentions_opsgate_writes() -> None:
    assert escape_composed("Request #5 is already denied by <@U0SRE1>.") == (
        "Request #5 is already denied by <@U0SRE1>."
    )
    assert escape_composed("revoked early by <@U0SRE1>: " + REASON) == (
        "revoked early by <@U0SRE1>: " + REASON_SHOWN
    )
    assert escape_composed("access ended: revoked early by <@U0DEV1>") == (
        "access ended: revoked early by <@U0DEV1>"
    )
    line = "Extend grant *#12* (edit in *payments* for <@U0DEV1>) by 1h"
    assert escape_composed(line) == line
    # the same words elsewhere than at the start, or around something typed, are escaped
    assert escape_composed("deployment 'revoked early by <@U0BOSS>' not found") == (
        "deployment 'revoked early by &lt;@U0BOSS&gt;' not found"
    )
    assert escape_composed("Request #5 is already denied by <!channel>") == (
        "Request #5 is already denied by &lt;!channel&gt;"
    )
    assert escape_composed("Extend grant *#1* (<!here> for <@U0BOSS>) by 1h") == (
        "Extend grant *#1* (&lt;!here&gt; for &lt;@U0BOSS&gt;) by 1h"
    )
    assert escape_composed("3 -> 5 replicas & more") == "3 -&gt; 5 replicas &amp; more"


def test_the_grammar_reads_the_command_as_the_person_typed_it() -> None:
    # Slack delivers typed &, < and > escaped; a link or mention made in the composer raw
    parsed = parse("restart api -n payments --reason 'R&amp;D &lt;3 <!channel>'")
    assert parsed.reason == "R&D <3 <!channel>"
    parsed = parse("restart api -n payments --reason 'typed &amp;lt; literally'")
    assert parsed.reason == "typed &lt; literally"


# --- the builders -----------------------------------------------------------------------------


def every_text(text: str, message_blocks: Any) -> str:
    return text + json.dumps(message_blocks)


def test_the_approval_card_shows_the_reason_and_names_as_text() -> None:
    view = make_view(
        reason=REASON,
        target="deployment/<!here>",
        namespace="ns-<@U0BOSS>",
        environment="prod",
        preview_lines=("Rolling restart of *deployment/<!here>*", "change-cause: <none> & co"),
        incident=True,
        incident_channel="inc-<!channel>",
        freeze="<!everyone>",
    )
    text, message_blocks = blocks.approval_message(view)
    assert_harmless(every_text(text, message_blocks))
    shown = json.dumps(message_blocks)
    assert f"*Reason:* {REASON_SHOWN}" in shown
    assert "Rolling restart of *deployment/&lt;!here&gt;*" in shown
    assert "change-cause: &lt;none&gt; &amp; co" in shown
    assert "restart deployment/&lt;!here&gt; in ns-&lt;@U0BOSS&gt; (prod)" in text
    # what opsgate itself writes stays mrkdwn
    assert "Asked by <@U0DEV1>" in shown
    assert "<#C0DEV>" in shown
    # a result or an error may quote input too
    for status in ("succeeded", "failed", "cancelled", "active", "revoked"):
        done = replace(view, status=status, result=REASON, error=REASON, decided_by="U0SRE1")
        text, message_blocks = blocks.approval_message(done)
        assert_harmless(every_text(text, message_blocks))
        assert REASON_SHOWN in json.dumps(message_blocks)
    revoked = replace(
        view, status="revoked", result=f"access ended: revoked early by <@U0SRE1>: {REASON}"
    )
    assert blocks.outcome_line(revoked).endswith(
        f"Ended: access ended: revoked early by <@U0SRE1>: {REASON_SHOWN}"
    )


def test_announcement_thread_updates_and_the_break_glass_notice_escape_what_was_typed() -> None:
    view = make_view(reason=JUSTIFICATION, target="deployment/<!here>", result=REASON)
    assert_harmless(blocks.requester_announcement(view))
    assert_harmless(blocks.requester_announcement(replace(view, break_glass=True)))
    for event in ("approval_added", "approved", "succeeded", "failed", "escalated"):
        assert_harmless(blocks.thread_update(replace(view, status="succeeded"), event))
    assert REASON_SHOWN in blocks.thread_update(replace(view, status="succeeded"), "succeeded")
    text, message_blocks = blocks.break_glass_notice(replace(view, break_glass=True))
    assert_harmless(every_text(text, message_blocks))
    assert f"*Justification:* {JUSTIFICATION_SHOWN}" in json.dumps(message_blocks)
    assert_harmless(blocks.status_list([view, replace(view, status="failed", error=REASON)]))


def test_errors_escape_what_they_quote_and_keep_who_decided() -> None:
    assert blocks.error_message("deployment '<!channel>' not found in payments") == (
        ":warning: deployment '&lt;!channel&gt;' not found in payments"
    )
    assert blocks.error_message("Request #5 is already denied by <@U0SRE1>.") == (
        ":warning: Request #5 is already denied by <@U0SRE1>."
    )
    answer = blocks.error_message("Unknown command `<@U0BOSS>`.\nUsage: `/ops restart <workload>`")
    assert_harmless(answer)
    assert "/ops restart &lt;workload&gt;" in answer


def test_the_ack_and_the_history_escape_what_they_echo() -> None:
    # the command text as Slack delivers it: typed characters escaped, a composer link raw
    ack = blocks.checking("restart api -n payments --reason 'R&amp;D <https://evil.example|x>'")
    assert ack == (
        ":hourglass_flowing_sand: Checking `/ops restart api -n payments --reason "
        "'R&amp;D &lt;https://evil.example|x&gt;'`…"
    )
    history = blocks.history_lines(["*revision 1*: `a:1`, 1s old, change-cause: <!channel>"])
    assert history == "*revision 1*: `a:1`, 1s old, change-cause: &lt;!channel&gt;"


def test_grant_messages_escape_names_and_the_revoke_reason() -> None:
    hostile = grant(
        role="<!here>",
        namespace="ns-<@U0BOSS>",
        environment="<!channel>",
        kubernetes_user="<https://evil.example|alice>",
        vault_group="<!everyone>",
        status="revoked",
        revoked_by="U0SRE1",
        revoke_reason=f"revoked early by <@U0SRE1>: {REASON}",
    )
    for event in ("started", "reminder", "extended", "revoked", "expired", "drift_removed"):
        text, message_blocks = grant_blocks.grant_notice(hostile, event, NOW)
        assert_harmless(every_text(text, message_blocks))
    text, _ = grant_blocks.grant_notice(hostile, "revoked", NOW)
    assert f"was ended early: revoked early by <@U0SRE1>: {REASON_SHOWN}." in text
    assert_harmless(grant_blocks.grants_list([hostile], NOW, everyone=True))
    assert "<@U0DEV1>" in grant_blocks.grants_list([hostile], NOW, everyone=True)
    pending = make_view(reason=REASON, target="<!here> access to checkout")
    home = grant_blocks.home_view([hostile], [pending], [pending], NOW)
    assert_harmless(json.dumps(home))
    assert REASON_SHOWN in json.dumps(home)


def test_an_invalid_policy_is_reported_escaped(fake_slack: slack.FakeSlack) -> None:
    loaded = parse_policy(BASE_POLICY)
    client = WebClient(token=slack.BOT_TOKEN, base_url=fake_slack.api_url)
    notifier = SlackGrantNotifier(client, lambda: loaded, lambda: NOW)
    notifier.policy_reload_failed("policy.yml:3: groups.sre: unknown user '<!channel>'")
    [post] = fake_slack.calls_of("chat.postMessage")
    assert_harmless(post.args["text"])
    assert "unknown user '&lt;!channel&gt;'" in post.args["text"]


# --- end to end through the running bot ---------------------------------------------------------

POLICY = policy(
    """\
  - name: payments
    match: {action: restart, environment: prod}
    approvers: [sre]
    break_glass: [oncall]
  - match: {action: restart, environment: staging}
    approval: auto
""",
    settings={"incident_channels": None},
    groups={"security": None, "oncall": "{users: [U0ONCALL]}"},
    agents={"B0ALERTS": "{name: alertmanager}"},
    environments={"sandbox": None},
)


@pytest.fixture
def policy_text() -> str:
    return POLICY


@pytest.fixture(autouse=True)
def channels(fake_slack: slack.FakeSlack) -> None:
    fake_slack.channels.update({"C0DEV": "dev"})


class Acks:
    """Every HTTP answer the bot gave (a slash command's ack carries text too)."""

    def __init__(self) -> None:
        self.bodies: list[str] = []

    def command(self, bot: RunningBot, text: str, *, user: str = "U0DEV1") -> str:
        answer, response_url = bot.command(text, user=user)
        assert answer.status_code == 200
        self.bodies.append(answer.text)
        return response_url

    def post(self, bot: RunningBot, body: str) -> None:
        answer: httpx.Response = bot.post(body)
        assert answer.status_code == 200
        self.bodies.append(answer.text)


def everything_sent(bot: RunningBot, acks: Acks) -> str:
    """Every Slack call the bot made (Web API and response_url bodies) and every ack."""
    return bot.fake_slack.all_text() + "".join(acks.bodies)


def answers(bot: RunningBot, response_url: str) -> list[str]:
    path = "/" + response_url.split("127.0.0.1", 1)[1].split("/", 1)[1]
    return [c.args.get("text", "") for c in bot.fake_slack.calls if c.path == path]


def home_opened(user: str) -> str:
    event = {"type": "app_home_opened", "user": user, "channel": "D0HOME", "tab": "home"}
    return slack.event_callback_body(event | {"event_ts": f"{time.time():.6f}"})


def posts(bot: RunningBot, channel: str) -> list[slack.Call]:
    return [c for c in bot.fake_slack.calls_of("chat.postMessage") if c.args["channel"] == channel]


def test_a_hostile_reason_pings_nobody_and_links_nowhere(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    acks = Acks()
    acks.command(bot, f"restart payments-api -n payments --reason '{REASON}'")
    approval = wait_for(lambda: [c for c in posts(bot, "C0APPROVALS")], what="the approval card")[0]
    card = json.dumps(approval.args["blocks"])
    assert f"*Reason:* {REASON_SHOWN}" in card
    assert_harmless(approval.args["text"] + card)

    # the App Home of the requester (pending) and of an approver (waiting on them)
    acks.post(bot, home_opened("U0DEV1"))
    acks.post(bot, home_opened("U0SRE1"))
    homes = wait_for(
        lambda: (
            {c.args["user_id"]: c.args["view"] for c in bot.fake_slack.calls_of("views.publish")}
            if len(bot.fake_slack.calls_of("views.publish")) >= 2
            else None
        ),
        what="both App Homes",
    )
    assert set(homes) == {"U0DEV1", "U0SRE1"}
    for view in homes.values():
        assert REASON_SHOWN in json.dumps(view)

    bot.click("approve", "1", user="U0SRE1")
    wait_for(
        lambda: [c for c in posts(bot, "C0AUDIT") if "Done" in c.args["text"]],
        what="the audit mirror of the result",
    )
    status = acks.command(bot, "status 1")
    wait_for(lambda: answers(bot, status), what="/ops status")

    sent = everything_sent(bot, acks)
    assert_harmless(sent)
    assert REASON_SHOWN in sent


def test_a_hostile_break_glass_and_echoed_names_reach_slack_as_text(
    bot: RunningBot, kube: FakeKubernetes, settings: Settings
) -> None:
    acks = Acks()
    acks.command(
        bot, f"restart payments-api -n payments --break-glass '{JUSTIFICATION}'", user="U0ONCALL"
    )
    notice = wait_for(
        lambda: [c for c in posts(bot, "C0AUDIT") if c.args.get("blocks")],
        what="the break-glass notice",
    )[0]
    assert f"*Justification:* {JUSTIFICATION_SHOWN}" in json.dumps(notice.args["blocks"])
    wait_for(
        lambda: [c for c in posts(bot, "C0AUDIT") if "Done" in c.args["text"]],
        what="the break-glass restart to be done",
    )

    # what the requester typed, echoed back in answers: a workload, a namespace, a command
    workload = acks.command(bot, "restart '<!channel>' -n payments --reason x")
    namespace = acks.command(bot, "restart api -n '<!here>-ns' --reason x")
    [wrong_workload] = wait_for(lambda: answers(bot, workload), what="the workload's answer")
    [wrong_namespace] = wait_for(lambda: answers(bot, namespace), what="the namespace's answer")
    assert wrong_workload == (
        ":warning: no Deployment, StatefulSet or DaemonSet named '&lt;!channel&gt;' in namespace "
        "payments"
    )
    assert wrong_namespace.startswith(":warning: namespace '&lt;!here&gt;-ns' is in no environment")
    assert "Checking `/ops restart '&lt;!channel&gt;' -n payments --reason x`" in acks.bodies[-2]
    acks.command(bot, "<@U0BOSS> <https://evil.example|help>")
    assert "Unknown command `&lt;@U0BOSS&gt;`" in acks.bodies[-1]

    # an agent's answers are posted in the channel, where a ping would reach everyone
    event = slack.app_mention_event("restart '<!channel>' -n payments", user="", channel="C0DEV")
    del event["user"]
    event |= {
        "subtype": "bot_message",
        "bot_id": "B0ALERTS",
        "app_id": "A0ALERTS",
        "bot_profile": {"id": "B0ALERTS", "app_id": "A0ALERTS"},
    }
    acks.post(bot, slack.event_callback_body(event))
    reply = wait_for(
        lambda: [c for c in posts(bot, "C0DEV") if c.args.get("thread_ts") == event["ts"]],
        what="the answer to the agent",
    )[0]
    assert "&lt;!channel&gt;" in reply.args["text"]

    assert_harmless(everything_sent(bot, acks))
