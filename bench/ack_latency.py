"""Ack latency, time to the approval message and to the PATCH, and throughput, over HTTP.

    .venv/bin/python bench/ack_latency.py [--rounds 2] [--flows-1 25] [--flows-50 150]
                                          [--postgres URL] [--rollout-reads 1]

Two servers on 127.0.0.1, each in its own process, both FastAPI under uvicorn:

- *bare*: a slack-bolt ``App`` whose listeners (``/ops``, the Approve button) only ack,
  dispatched as opsgate dispatched before its own endpoint: ``run_in_threadpool(app.dispatch)``
  with the Starlette adapter's ``to_bolt_request`` / ``to_starlette_response``, with a 10-thread
  listener executor like opsgate's;
- *opsgate*: the real ``opsgate serve`` against a fake Slack and a fake Kubernetes API server
  (``tests/fakes``, real HTTP, in this process), on SQLite in a temporary directory (or the
  PostgreSQL database ``--postgres`` names, which is wiped).

Each is driven with signed requests, one *flow* at a time per client: ``/ops restart
bench-N -n bench`` (a Deployment of its own, a requester of its own), then, once the approval
message is posted, an Approve click by an approver (one approval is enough: the click is the
final one). At concurrency 1 and 50, rounds interleaved (bare 1, opsgate 1, bare 50, opsgate 50,
and again), so that a change in the machine's load hits both alike. The bare app's flow is the
command and the click, each answered by an ack. Measured in this process on one clock:

- *ack*: from sending a command or a click until its HTTP answer (both kinds together);
- *command → approval posted*: from sending the command until the fake Slack receives the
  ``chat.postMessage`` of the approval message;
- *click → PATCH*: from sending the final click until the fake Kubernetes receives the
  Deployment's PATCH (not the dry run of the preview);
- *throughput*: completed flows per second, at each concurrency (an opsgate flow is complete
  when its PATCH is issued);
- *CPU per flow*: the CPU seconds (user + system, from ``/proc``) the server's process used from
  the start of a phase until the work it caused is done (the fakes quiet), per completed flow: a
  figure the machine's other load disturbs far less than the times above.

Between two rounds the script waits until the fakes have received nothing for 0.5 s, so that a
round does not pay for the work the previous one left behind.

Ratios are to the bare app at the same concurrency and percentile (for the two end-to-end times:
to the bare app's ack). ``--rollout-reads N`` makes each rollout complete after N reads of the
Deployment (default 1: at the first read, so that following a rollout costs one GET). Everything
is bounded: a flow that gets no answer within 30 s counts as failed, and the script stops itself.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.concurrency import run_in_threadpool
from slack_bolt import Ack, App
from slack_bolt.adapter.starlette.handler import to_bolt_request, to_starlette_response
from slack_sdk import WebClient
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakes import slack  # noqa: E402
from tests.fakes.kube import FakeKubernetes, RecordedRequest, deployment, write_kubeconfig  # noqa: E402

APPROVAL_CHANNEL = "C0APPROVALS"
APPROVER = "U0SRE1"
NAMESPACE = "bench"
WAIT = 30.0
"""Seconds a flow waits for an answer, a message or a PATCH before it counts as failed."""

POLICY = f"""\
version: 1
approval_channel: {APPROVAL_CHANNEL}
audit_channel: C0AUDIT
groups:
  sre: {{users: [{APPROVER}, U0SRE2]}}
environments:
  prod: {{kube_context: prod, namespaces: [{NAMESPACE}]}}
rules:
  - match: {{action: restart, environment: prod}}
    approvers: [sre]
"""

_DEPLOYMENT = re.compile(r"\b(bench-\d+)\b")


# --- the fakes, timing what they receive ----------------------------------------------------------


@dataclass
class TimedSlack(slack.FakeSlack):
    """The fake Slack, noting when each approval message arrives: its Deployment's name ->
    (time.perf_counter(), its Approve button's (action_id, value), the message's ts)."""

    approvals: dict[str, tuple[float, tuple[str, str], str]] = field(default_factory=dict)

    def _record(
        self,
        method: str,
        args: dict[str, Any],
        path: str,
        response: dict[str, Any],
        token: str | None = None,
    ) -> None:
        arrived = time.perf_counter()
        super()._record(method, args, path, response, token)
        if method != "chat.postMessage" or args.get("channel") != APPROVAL_CHANNEL:
            return
        blocks = args.get("blocks")
        if isinstance(blocks, str):
            blocks = json.loads(blocks)
        found = _DEPLOYMENT.search(json.dumps(blocks))
        buttons = [
            element
            for block in blocks or []
            if block.get("type") == "actions"
            for element in block.get("elements", [])
            if str(element.get("action_id", "")).startswith("approve")
        ]
        if found and buttons and response.get("ts"):
            button = (str(buttons[0]["action_id"]), str(buttons[0].get("value")))
            with self._lock:
                self.approvals.setdefault(found.group(1), (arrived, button, str(response["ts"])))


def start_slack() -> TimedSlack:
    """:func:`tests.fakes.slack.start_fake_slack`, with :class:`TimedSlack`."""
    from pytest_httpserver import HTTPServer

    server = HTTPServer(host="127.0.0.1", port=0)
    server.start()
    fake = TimedSlack(server)
    server.expect_request(re.compile(r"^/api/.+")).respond_with_handler(fake.handle_api)
    server.expect_request(re.compile(r"^/response/\d+$")).respond_with_handler(
        fake.handle_response_url
    )
    return fake


class TimedKubernetes(FakeKubernetes):
    """The fake Kubernetes API server, noting when each Deployment's first PATCH (not a dry
    run) arrives: name -> time.perf_counter()."""

    def __init__(self) -> None:
        super().__init__()
        self.patched: dict[str, float] = {}

    def _record(self, request: RecordedRequest) -> None:
        arrived = time.perf_counter()
        super()._record(request)
        if (
            request.method == "PATCH"
            and "/deployments/" in request.path
            and "dryRun" not in request.query
        ):
            name = request.path.rsplit("/deployments/", 1)[-1]
            with self._lock:
                self.patched.setdefault(name, arrived)


# --- the two servers ------------------------------------------------------------------------------


def serve_bare(port: int, slack_api_url: str) -> None:
    """Serve the bare app (in its own process: ``--serve-bare``)."""
    bolt = App(
        client=WebClient(token=slack.BOT_TOKEN, base_url=slack_api_url),
        signing_secret=slack.SIGNING_SECRET,
        token_verification_enabled=False,
        listener_executor=ThreadPoolExecutor(max_workers=10),
        process_before_response=True,  # as opsgate's App: the listener's ack is the answer
    )

    @bolt.command("/ops")
    def command(ack: Ack) -> None:
        ack()

    @bolt.action("approve")
    def approve(ack: Ack) -> None:
        ack()

    api = FastAPI()

    @api.post("/slack/events")
    async def slack_events(request: Request) -> Response:
        body = await request.body()
        bolt_response = await run_in_threadpool(bolt.dispatch, to_bolt_request(request, body))
        return to_starlette_response(bolt_response)

    @api.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    uvicorn.run(api, host="127.0.0.1", port=port, log_level="info")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_server(name: str, argv: list[str], env: dict[str, str], log: Path, port: int) -> Server:
    with log.open("wb") as out:
        process = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    server = Server(name, f"http://127.0.0.1:{port}", process)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{name} exited with {process.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop()
    raise SystemExit(f"{name} was not ready after 60 s:\n{log.read_text()}")


# --- driving them ---------------------------------------------------------------------------------


@dataclass
class Sample:
    acks: list[float] = field(default_factory=list)
    to_message: list[float] = field(default_factory=list)
    to_patch: list[float] = field(default_factory=list)
    completed: int = 0
    failed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    seconds: float = 0.0
    cpu: float = 0.0
    """Seconds of CPU the server's process used during the phase (user + system)."""


class Driver:
    def __init__(self, fake: TimedSlack, kube: TimedKubernetes, http: httpx.AsyncClient):
        self.fake = fake
        self.kube = kube
        self.http = http
        self.numbers = itertools.count()
        """Numbers of the opsgate flows' Deployments (``bench-N``), from 0."""
        self.bare_numbers = itertools.count()

    async def post(self, url: str, body: str, sample: Sample) -> httpx.Response | None:
        started = time.perf_counter()
        try:
            answer = await self.http.post(
                f"{url}/slack/events", content=body, headers=slack.signed_headers(body)
            )
        except httpx.HTTPError as exc:
            sample.failed[type(exc).__name__] += 1
            return None
        sample.acks.append(time.perf_counter() - started)
        if answer.status_code != 200:
            sample.failed[f"HTTP {answer.status_code}"] += 1
            return None
        return answer

    def command_body(self, n: int) -> str:
        return slack.slash_command_body(
            f"restart bench-{n} -n {NAMESPACE} --reason benchmark",
            user_id=f"U0BENCH{n}",
            response_url=self.fake.response_url(),
        )

    def click_body(self, button: tuple[str, str], ts: str) -> str:
        return slack.block_action_body(
            *button,
            user_id=APPROVER,
            channel_id=APPROVAL_CHANNEL,
            message_ts=ts,
            response_url=self.fake.response_url(),
        )

    async def bare_flow(self, url: str, sample: Sample) -> None:
        n = next(self.bare_numbers)
        if await self.post(url, self.command_body(n), sample) is None:
            return
        click = self.click_body(("approve", "1"), "1700000000.000100")
        if await self.post(url, click, sample) is None:
            return
        sample.completed += 1

    async def opsgate_flow(self, url: str, sample: Sample) -> None:
        n = next(self.numbers)
        name = f"bench-{n}"
        sent = time.perf_counter()
        if await self.post(url, self.command_body(n), sample) is None:
            return
        posted = await wait(lambda: self.fake.approvals.get(name))
        if posted is None:
            sample.failed["no approval message"] += 1
            return
        arrived, button, ts = posted
        sample.to_message.append(arrived - sent)
        clicked = time.perf_counter()
        if await self.post(url, self.click_body(button, ts), sample) is None:
            return
        patched = await wait(lambda: self.kube.patched.get(name))
        if patched is None:
            sample.failed["no PATCH"] += 1
            return
        sample.to_patch.append(patched - clicked)
        sample.completed += 1


async def wait(found: Callable[[], Any]) -> Any:
    deadline = time.perf_counter() + WAIT
    while time.perf_counter() < deadline:
        value = found()
        if value is not None:
            return value
        await asyncio.sleep(0.002)
    return None


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used (Linux ``/proc``; 0 elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_phase(
    flow: Callable[[Sample], Awaitable[None]],
    concurrency: int,
    flows: int,
    cpu: Callable[[], float] = lambda: 0.0,
) -> Sample:
    """Run ``flows`` flows, ``concurrency`` at a time; ``cpu`` reads the server's CPU seconds,
    before the phase and after the work it caused is done (see :func:`settle`)."""
    sample = Sample()
    left = iter(range(flows))

    async def client() -> None:
        for _ in left:
            await flow(sample)

    started = time.perf_counter()
    cpu_before = cpu()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    sample.seconds = time.perf_counter() - started
    sample.cpu = -cpu_before
    return sample


async def settle(fake: TimedSlack, kube: TimedKubernetes, quiet: float = 0.5) -> None:
    """Wait (at most :data:`WAIT` seconds) until neither fake has received anything for
    ``quiet`` seconds: the work a round left behind is done before the next one starts."""
    deadline = time.perf_counter() + WAIT
    seen = (-1, -1)
    while time.perf_counter() < deadline:
        now = (len(fake.calls), len(kube.requests))
        if now == seen:
            return
        seen = now
        await asyncio.sleep(quiet)


def merge(samples: list[Sample]) -> Sample:
    total = Sample()
    for s in samples:
        total.acks += s.acks
        total.to_message += s.to_message
        total.to_patch += s.to_patch
        total.completed += s.completed
        total.seconds += s.seconds
        total.cpu += s.cpu
        for reason, count in s.failed.items():
            total.failed[reason] += count
    return total


# --- the report -----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:8.1f}"


def ratio(value: float | None, base: float | None) -> str:
    return "" if value is None or not base else f" ({value / base:5.2f}x)"


def report(results: dict[tuple[str, int], Sample], concurrencies: list[int]) -> None:
    def line(label: str, values: Callable[[str, int], list[float]], app: str, base: str) -> None:
        cells = []
        for c in concurrencies:
            for q in (0.5, 0.99):
                value = percentile(values(app, c), q)
                reference = percentile(results[(base, c)].acks, q) if base else None
                cells.append(f"{ms(value)}{ratio(value, reference) if app != base else ' ' * 8}")
        print(f"{label:<38}" + "".join(f"{cell:>18}" for cell in cells))

    header = "".join(f"{f'c={c} p{q}':>18}" for c in concurrencies for q in (50, 99))
    print(f"\n{'milliseconds (ratio to the bare app)':<38}{header}")
    line("ack, bare slack-bolt app", lambda a, c: results[(a, c)].acks, "bare", "bare")
    line("ack, opsgate", lambda a, c: results[(a, c)].acks, "opsgate", "bare")
    line(
        "slash command → approval posted",
        lambda a, c: results[(a, c)].to_message,
        "opsgate",
        "bare",
    )
    line("final click → PATCH issued", lambda a, c: results[(a, c)].to_patch, "opsgate", "bare")
    print(
        "\nthroughput, completed flows per second (opsgate: command, approval posted, click, PATCH)"
    )
    for c in concurrencies:
        bare, ops = results[("bare", c)], results[("opsgate", c)]
        bare_rate = bare.completed / bare.seconds if bare.seconds else 0.0
        ops_rate = ops.completed / ops.seconds if ops.seconds else 0.0
        print(
            f"  concurrency {c:>2}: bare {bare_rate:7.1f}/s, opsgate {ops_rate:7.1f}/s"
            f"{ratio(ops_rate, bare_rate)}"
        )
    print("\nCPU of the server's process per completed flow (all the work a flow caused)")
    for c in concurrencies:
        bare, ops = results[("bare", c)], results[("opsgate", c)]
        per = [s.cpu / s.completed * 1000 if s.completed else 0.0 for s in (bare, ops)]
        print(f"  concurrency {c:>2}: bare {per[0]:6.1f} ms, opsgate {per[1]:6.1f} ms")
    for (app, c), sample in sorted(results.items()):
        if sample.failed:
            print(f"  {app} at concurrency {c}: failed {dict(sample.failed)}")


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for row in Path("/proc/cpuinfo").read_text().splitlines():
            if row.startswith("model name"):
                cpu = row.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{cpu}, {os.cpu_count()} CPU(s), Python {platform.python_version()}, load {load}"


# --- main -----------------------------------------------------------------------------------------


async def drive(
    servers: dict[str, Server],
    fake: TimedSlack,
    kube: TimedKubernetes,
    rounds: int,
    flows: dict[int, int],
) -> dict[tuple[str, int], Sample]:
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=WAIT, limits=limits) as http:
        driver = Driver(fake, kube, http)
        flows_of: dict[str, Callable[[Sample], Awaitable[None]]] = {
            "bare": lambda s: driver.bare_flow(servers["bare"].url, s),
            "opsgate": lambda s: driver.opsgate_flow(servers["opsgate"].url, s),
        }
        for flow in flows_of.values():  # warm up: connections, auth.test, caches
            await run_phase(flow, 1, 3)
        await settle(fake, kube)
        samples: dict[tuple[str, int], list[Sample]] = defaultdict(list)
        for r in range(rounds):
            for c, count in flows.items():
                for name, flow in flows_of.items():
                    pid = servers[name].process.pid
                    sample = await run_phase(flow, c, count, lambda pid=pid: cpu_seconds(pid))
                    await settle(fake, kube)
                    sample.cpu += cpu_seconds(pid)
                    samples[(name, c)].append(sample)
                    print(
                        f"round {r + 1}, {name:<7} concurrency {c:>2}: {sample.completed}/{count}"
                        f" flows in {sample.seconds:.1f} s",
                        flush=True,
                    )
    return {key: merge(value) for key, value in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--flows-1", type=int, default=25, help="flows per round, concurrency 1")
    parser.add_argument("--flows-50", type=int, default=150, help="flows per round, concurrency 50")
    parser.add_argument("--postgres", help="a PostgreSQL URL the script may wipe (default: SQLite)")
    parser.add_argument("--rollout-reads", type=int, default=1)
    parser.add_argument("--serve-bare", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--slack-api-url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare, args.slack_api_url)
        return

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the fake Slack's access log
    flows = {1: args.flows_1, 50: args.flows_50}
    total = 3 + args.rounds * sum(flows.values())
    fake = start_slack()
    kube = TimedKubernetes()
    kube.start()
    kube.controllers.steps = args.rollout_reads
    for n in range(total):
        kube.add(deployment(f"bench-{n}", NAMESPACE, replicas=2, image="bench:1"))
    servers: dict[str, Server] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        database = args.postgres or f"sqlite:///{workdir / 'opsgate.db'}"
        if args.postgres:
            assert make_url(args.postgres).get_backend_name() == "postgresql"
            engine = create_engine(args.postgres)
            with engine.begin() as conn:
                conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
                conn.execute(text("CREATE SCHEMA public"))
            engine.dispose()
        (workdir / "policy.yml").write_text(POLICY)
        kubeconfig = write_kubeconfig(workdir / "kubeconfig", {"prod": kube})
        env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "OPSGATE_"))}
        env |= {"PYTHONPATH": str(ROOT), "HOME": str(workdir)}
        opsgate_env = env | {
            "OPSGATE_DATABASE_URL": database,
            "OPSGATE_POLICY": str(workdir / "policy.yml"),
            "SLACK_BOT_TOKEN": slack.BOT_TOKEN,
            "SLACK_SIGNING_SECRET": slack.SIGNING_SECRET,
            "SLACK_API_URL": fake.api_url,
            "KUBECONFIG": str(kubeconfig),
        }
        opsgate = str(Path(sys.executable).parent / "opsgate")
        try:
            port = free_port()
            servers["bare"] = start_server(
                "bare app",
                [
                    sys.executable,
                    __file__,
                    "--serve-bare",
                    str(port),
                    "--slack-api-url",
                    fake.api_url,
                ],
                env,
                workdir / "bare.log",
                port,
            )
            port = free_port()
            servers["opsgate"] = start_server(
                "opsgate serve",
                [opsgate, "serve", "--port", str(port)],
                opsgate_env,
                workdir / "opsgate.log",
                port,
            )
            backend = "PostgreSQL" if args.postgres else "SQLite"
            print(f"machine: {machine()}")
            print(
                f"opsgate on {backend}; {args.rounds} rounds of {flows[1]} flows at concurrency 1"
                f" and {flows[50]} at concurrency 50; rollouts complete after "
                f"{args.rollout_reads} read(s)",
                flush=True,
            )
            results = asyncio.run(drive(servers, fake, kube, args.rounds, flows))
        finally:
            for server in servers.values():
                server.stop()
            kube.stop()
            fake.server.clear()
            fake.server.stop()
    report(results, list(flows))
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
