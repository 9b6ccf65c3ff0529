"""The ``opsgate`` command: ``serve``, ``migrate``, ``rbac``, ``policy check|explain``, ``audit
verify|export``, ``token``, ``request``, ``status``, ``explain`` (clients of the HTTP API) and
``mcp``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

import uvicorn
import yaml
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from approvals import autonomy
from approvals.db import make_engine, make_sessionmaker, migrate
from approvals.policy import (
    Decision,
    LoadedPolicy,
    NamespaceError,
    Outcome,
    Policy,
    PolicyError,
    RequestContext,
    decide,
    explain_mismatches,
    freeze_window_text,
    is_incident_channel,
    load_policy,
    policy_warnings,
    requester_kind,
    resolve_environment,
    seconds_text,
)
from approvals.rbac import UnboundedRoles, cluster_role
from bot import audit_cli, client, token_cli
from bot.logs import configure_logging
from bot.settings import Settings

log = logging.getLogger("opsgate")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="opsgate", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve Slack on POST /slack/events")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8080, help="TCP port to listen on")
    sub.add_parser("migrate", help="apply the database migrations up to head")
    rbac = sub.add_parser("rbac", help="print the ClusterRole opsgate needs for a policy (YAML)")
    rbac.add_argument("--policy", help="the policy file (default: OPSGATE_POLICY)")
    rbac.add_argument("--name", default="opsgate", help="the ClusterRole's name")
    policy = sub.add_parser("policy", help="work with the policy file")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    check = policy_sub.add_parser("check", help="validate a policy file")
    check.add_argument("file", nargs="?", help="the policy file (default: OPSGATE_POLICY)")
    check.add_argument("--strict", action="store_true", help="exit 2 when there are warnings")
    explain = policy_sub.add_parser(
        "explain", help="show how the policy decides a request, and why"
    )
    explain.add_argument("file", nargs="?", help="the policy file (default: OPSGATE_POLICY)")
    explain.add_argument("--user", help="the requester's Slack user ID (or give --agent NAME)")
    explain.add_argument("--action", required=True, help="restart, scale, rollback, access, …")
    explain.add_argument("--namespace", "-n", help="the request's namespace")
    explain.add_argument("--env", help="the environment, when the namespace is in several")
    explain.add_argument("--channel", help="the name of the channel the request is made in")
    explain.add_argument("--path", help="the Vault secret path (rotate, restore)")
    explain.add_argument(
        "--agent",
        nargs="?",
        const="",
        metavar="NAME",
        help="the requester is automation (implied for an ID the policy lists under agents); "
        "with NAME, that agent of the policy, and where it stands in earned autonomy",
    )
    explain.add_argument("--reason", help="the request's --reason")
    explain.add_argument("--break-glass", action="store_true", help="ask with --break-glass")
    explain.add_argument(
        "--at", help="when the request is made (ISO 8601; no offset: UTC; default: now)"
    )
    audit_cli.add_parser(sub)
    token_cli.add_commands(sub)
    client.add_commands(sub)
    mcp = sub.add_parser(
        "mcp", help="serve the Model Context Protocol (OPSGATE_URL, OPSGATE_TOKEN)"
    )
    mcp.add_argument("--transport", choices=("stdio", "streamable-http"), default="stdio")
    mcp.add_argument("--host", default="127.0.0.1", help="streamable-http: address to listen on")
    mcp.add_argument("--port", type=int, default=8765, help="streamable-http: TCP port")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the process exit code (0 success, 1 failure, 2 usage)."""
    args = _parser().parse_args(argv)
    if args.command in ("request", "status", "explain", "mcp"):
        configure_logging("text")  # clients of the API: no Settings needed
    if args.command in ("request", "status", "explain"):
        return client.run(args)
    if args.command == "mcp":
        from bot.mcp_server import serve

        return serve(args.transport, host=args.host, port=args.port)
    try:
        settings = Settings()
    except ValidationError as exc:
        print(f"opsgate: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_format)
    if args.command == "migrate":
        migrate(settings.database_url)
        print(f"opsgate: database at head ({_redacted(settings.database_url)})")
        return 0
    if args.command == "audit":
        return audit_cli.run(args, settings.database_url)
    if args.command == "token":
        return token_cli.run(settings, args)
    if args.command == "rbac":
        return _rbac(args.policy or settings.policy_path, args.name)
    if args.command == "policy":
        path = args.file or settings.policy_path
        try:
            loaded = load_policy(path)
        except PolicyError as exc:
            print(f"opsgate: the policy is invalid:\n{exc}", file=sys.stderr)
            return 1
        if args.policy_command == "explain":
            return _explain(loaded, args, database_url=settings.database_url)
        print(f"{path}: OK ({len(loaded.policy.rules)} rules, sha256 {loaded.sha256})")
        warnings = policy_warnings(loaded, now=datetime.now(UTC))
        for warning in warnings:
            print(f"warning: {warning.render(str(path))}")
        return 2 if warnings and args.strict else 0
    return _serve(settings, args.host, args.port)


def _explain(
    loaded: LoadedPolicy, args: argparse.Namespace, *, database_url: str | None = None
) -> int:
    """``opsgate policy explain``: decide one request offline and print the decision and why
    (and, for ``--agent NAME``, its earned autonomy read from ``database_url``)."""
    policy = loaded.policy
    if args.agent:
        found = [i for i, a in policy.agents.items() if args.agent in (i, a.name)]
        if not found:
            print(f"opsgate: '{args.agent}' is not in the policy's agents", file=sys.stderr)
            return 1
        args.user = found[0]
    if not args.user:
        print("opsgate: give --user ID or --agent NAME", file=sys.stderr)
        return 2
    environment: str | None = args.env
    try:
        if args.namespace is not None:
            environment = resolve_environment(policy, args.namespace, args.env)
        elif args.env is not None and args.env not in policy.environments:
            raise NamespaceError(
                f"unknown environment '{args.env}' "
                f"(environments: {', '.join(sorted(policy.environments))})"
            )
        at = datetime.now(UTC) if args.at is None else datetime.fromisoformat(args.at)
    except (NamespaceError, ValueError) as exc:
        print(f"opsgate: {exc}", file=sys.stderr)
        return 1
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)
    incident = is_incident_channel(policy, args.channel)
    ctx = RequestContext(
        action=args.action,
        requester=args.user,
        environment=environment,
        namespace=args.namespace,
        path=args.path,
        incident=incident,
        requester_kind=requester_kind(
            policy, args.user, "agent" if args.agent is not None else "human"
        ),
        reason=args.reason,
        break_glass=args.break_glass,
        at=at,
    )
    decision = decide(loaded, ctx)
    for line in explain_lines(loaded, ctx, decision):
        print(line)
    if args.agent and database_url is not None:
        print(autonomy_line(loaded, ctx, decision, database_url))
    return 0


def _rbac(path: str, name: str) -> int:
    """``opsgate rbac``: print the ClusterRole for the policy at ``path`` (1 when it is invalid
    or may grant any ClusterRole)."""
    try:
        role = cluster_role(load_policy(path), name=name)
    except PolicyError as exc:
        print(f"opsgate: the policy is invalid:\n{exc}", file=sys.stderr)
        return 1
    except UnboundedRoles as exc:
        print(f"opsgate: {exc}", file=sys.stderr)
        return 1
    print(f"# generated by: opsgate rbac --policy {path}", end="\n---\n")
    print(yaml.safe_dump(role, sort_keys=False), end="")
    return 0


def autonomy_line(
    loaded: LoadedPolicy, ctx: RequestContext, decision: Decision, database_url: str
) -> str:
    """``autonomy: …``: where the agent stands under the rule's ``autonomy`` (the database's
    history of its requests), or why it has none."""
    rule_autonomy = autonomy.rule_autonomy(loaded, decision)
    if rule_autonomy is None or decision.rule_label is None:
        return "autonomy: none (the rule has no autonomy)"
    if not ctx.reversible:
        return f"autonomy: never for {ctx.action} (irreversible)"
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine)() as session:
            where = autonomy.standing(
                session,
                agent_id=ctx.requester,
                rule=decision.rule_label,
                autonomy=rule_autonomy,
                now=ctx.at or datetime.now(UTC),
            )
    except SQLAlchemyError as exc:
        return f"autonomy: unknown, the database cannot be read ({type(exc).__name__})"
    finally:
        engine.dispose()
    state = "earned: no human needed" if where.granted else "not earned yet"
    return f"autonomy: {state} ({where.text()}; reset on {', '.join(rule_autonomy.reset_on)})"


def explain_lines(loaded: LoadedPolicy, ctx: RequestContext, decision: Decision) -> list[str]:
    """The report of ``opsgate policy explain``: the decision, the rule, why, who must approve,
    and why each earlier rule did not match. Slack user groups cannot be resolved offline: only
    the groups' listed users count here, and user groups are named as resolved at run time."""
    policy = loaded.policy
    where = ", ".join(
        part
        for part in (
            f"environment {ctx.environment}" if ctx.environment else "",
            f"namespace {ctx.namespace}" if ctx.namespace else "",
            f"path {ctx.path}" if ctx.path else "",
            "in an incident channel" if ctx.incident else "",
        )
        if part
    )
    agent = policy.agents.get(ctx.requester)
    kind = f"agent {agent.name!r}" if agent is not None else ctx.requester_kind
    lines = [
        f"request:  {ctx.action}{f' ({where})' if where else ''} by {ctx.requester} "
        f"({kind}){', break-glass' if ctx.break_glass else ''}, "
        f"at {ctx.at.isoformat() if ctx.at else '-'}",
        f"decision: {decision.outcome.value} ({decision.reason.value})",
        f"rule:     {decision.rule_label or 'none'}",
        f"why:      {decision.message}",
    ]
    if decision.freeze:
        lines.append(f"freeze:   {decision.freeze}")
    lines += _step_lines(policy, ctx, decision)
    if decision.rule_index is not None and decision.outcome is not Outcome.DENY:
        escalation = (
            f"; escalates to {decision.escalate_to} after {seconds_text(decision.escalate_after)}"
            if decision.escalate_to
            else ""
        )
        if decision.outcome is Outcome.APPROVAL:
            lines.append(
                f"pending:  expires after {seconds_text(decision.pending_ttl)}{escalation}"
            )
        if decision.approval_channel:
            lines.append(f"channel:  {decision.approval_channel}")
        settings = {
            k: v
            for k, v in decision.settings.items()
            if v not in (None, {}, []) and (k != "extend" or ctx.action in ("access", "extend"))
        }
        if settings:
            lines.append(f"settings: {settings}")
    for freeze in policy.freezes:
        lines.append(
            f"freezes:  {freeze.label()}: {freeze_window_text(freeze)}"
            f"{'; allows ' + ', '.join(freeze.allow) if freeze.allow else ''}"
            f"{' (in force)' if ctx.at and freeze.in_force(ctx.at) else ''}"
        )
    stop = len(policy.rules) if decision.rule_index is None else decision.rule_index
    if stop:
        lines.append("earlier rules that did not match:")
        for index, why in enumerate(explain_mismatches(loaded, ctx)[:stop]):
            lines.append(f"  {loaded.rule_label(index)}: {'; '.join(why)}")
    lines.append(f"policy:   {loaded.source} sha256 {loaded.sha256}")
    return lines


def _step_lines(policy: Policy, ctx: RequestContext, decision: Decision) -> list[str]:
    """The approval steps of ``decision`` for :func:`explain_lines`: who may approve each."""
    lines: list[str] = []
    if decision.steps:
        title = (
            "reviewers (break-glass):"
            if decision.outcome is Outcome.BREAK_GLASS
            else "approvals needed (every step; distinct people; never the requester):"
        )
        lines.append(title)
        for k, step in enumerate(decision.steps, start=1):
            who: list[str] = []
            for name in step.groups:
                group = policy.groups[name]
                who += [u + (" (the requester)" if u == ctx.requester else "") for u in group.users]
                who += [
                    f"members of usergroup {s} (resolved at run time)" for s in group.usergroups
                ]
            lines.append(
                f"  step {k}: {step.min_approvals} of {' or '.join(step.groups)}: "
                f"{', '.join(who) or 'nobody'}"
            )
        if decision.outcome is Outcome.DENY and any(
            policy.groups[g].usergroups for s in decision.steps for g in s.groups
        ):
            lines.append(
                "  note: only the groups' listed users were counted; the user groups may "
                "supply enough approvers at run time"
            )
    return lines


def _serve(settings: Settings, host: str, port: int) -> int:
    from bot.app import create_app

    try:
        app = create_app(settings)
    except PolicyError as exc:
        print(f"opsgate: refusing to start, the policy is invalid:\n{exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"opsgate: refusing to start: {exc}", file=sys.stderr)
        return 1
    # log_config=None: uvicorn's loggers go through the handler of configure_logging
    uvicorn.run(app, host=host, port=port, log_level="info", log_config=None)
    return 0


def _redacted(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


if __name__ == "__main__":
    raise SystemExit(main())
