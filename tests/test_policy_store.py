"""``approvals.policy_store.PolicyStore`` and ``bot.policy_watch``: reloads, for real.

The watcher test writes files into a real directory and waits for the real ``watchfiles``
watcher (short debounce) to notice them.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from watchfiles import Change

from approvals.policy import LoadedPolicy, PolicyError
from approvals.policy_store import PolicyStore
from bot.policy_watch import _filter_for, install_sighup, watch_policy

V1 = """\
version: 1
approval_channel: C0A
groups:
  sre: {users: [U0SRE1]}
environments:
  prod: {namespaces: [payments]}
rules:
  - match: {action: restart}
    approvers: [sre]
"""
V2 = V1.replace("approvers: [sre]", "approval: auto")
INVALID = V1.replace("approvers: [sre]", "aprovers: [sre]")


def wait_until(predicate: Callable[[], Any], *, timeout: float = 15.0) -> Any:
    done = threading.Event()
    deadline = threading.Event()
    timer = threading.Timer(timeout, deadline.set)
    timer.start()
    try:
        while not deadline.is_set():
            value = predicate()
            if value:
                return value
            done.wait(0.02)
    finally:
        timer.cancel()
    pytest.fail(f"timed out after {timeout}s")


class Recorder:
    def __init__(self) -> None:
        self.errors: list[PolicyError] = []
        self.reloads: list[LoadedPolicy] = []

    def on_error(self, error: PolicyError) -> None:
        self.errors.append(error)

    def on_reload(self, loaded: LoadedPolicy) -> None:
        self.reloads.append(loaded)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yml"
    path.write_text(V1)
    return path


@pytest.fixture
def store(policy_file: Path, recorder: Recorder) -> PolicyStore:
    return PolicyStore(policy_file, on_error=recorder.on_error, on_reload=recorder.on_reload)


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def replace_atomically(path: Path, text: str) -> None:
    """As editors and ``git checkout`` do: write a temporary file, rename it over the old one."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# --- PolicyStore --------------------------------------------------------------------------------


def test_initial_policy(store: PolicyStore) -> None:
    assert store.current().sha256 == sha(V1)
    assert store() is store.current()


def test_invalid_initial_file_raises(tmp_path: Path) -> None:
    path = tmp_path / "policy.yml"
    path.write_text(INVALID)
    with pytest.raises(PolicyError) as info:
        PolicyStore(path)
    assert f"{path}:9: rules[0].aprovers" in str(info.value)


def test_reload_valid_replaces_and_reports(
    store: PolicyStore, policy_file: Path, recorder: Recorder
) -> None:
    policy_file.write_text(V2)
    result = store.reload()
    assert isinstance(result, LoadedPolicy)
    assert result.sha256 == sha(V2)
    assert store.current() is result
    assert store.current().policy.rules[0].approval == "auto"
    assert recorder.reloads == [result]
    assert recorder.errors == []


def test_reload_invalid_keeps_previous_and_reports(
    store: PolicyStore, policy_file: Path, recorder: Recorder
) -> None:
    before = store.current()
    policy_file.write_text(INVALID)
    result = store.reload()
    assert isinstance(result, PolicyError)
    assert store.current() is before
    assert [str(e) for e in recorder.errors] == [str(result)]
    assert f"{policy_file}:9: rules[0].aprovers" in str(result)
    assert recorder.reloads == []


def test_the_same_invalid_file_is_reported_once(
    store: PolicyStore, policy_file: Path, recorder: Recorder
) -> None:
    policy_file.write_text(INVALID)
    first = store.reload()
    second = store.reload()  # a second event of the same save, or a SIGHUP
    assert isinstance(first, PolicyError)
    assert isinstance(second, PolicyError)
    assert len(recorder.errors) == 1
    policy_file.write_text(INVALID.replace("C0A", "C0B"))  # another invalid version: same error
    store.reload()
    assert len(recorder.errors) == 1
    policy_file.write_text(V1)  # valid again (unchanged), then broken again: reported again
    store.reload()
    policy_file.write_text(INVALID)
    store.reload()
    assert len(recorder.errors) == 2


def test_reload_missing_file_keeps_previous(
    store: PolicyStore, policy_file: Path, recorder: Recorder
) -> None:
    policy_file.unlink()
    result = store.reload()
    assert isinstance(result, PolicyError)
    assert "cannot read the policy" in str(result)
    assert store.current().sha256 == sha(V1)


def test_reload_unchanged_is_a_no_op(
    store: PolicyStore, policy_file: Path, recorder: Recorder
) -> None:
    before = store.current()
    policy_file.write_text(V1)  # rewritten, same bytes
    assert store.reload() is before
    assert recorder.reloads == []
    assert recorder.errors == []


# --- the watcher ----------------------------------------------------------------------------------


@pytest.fixture
def watching(store: PolicyStore) -> Iterator[threading.Thread]:
    stop = threading.Event()
    thread = watch_policy(store, stop, debounce=50, step=10, rust_timeout=200)
    try:
        yield thread
    finally:
        stop.set()
        thread.join(timeout=10)
        assert not thread.is_alive()


def test_watcher_reloads_on_change_and_reports_invalid(
    store: PolicyStore,
    policy_file: Path,
    recorder: Recorder,
    watching: threading.Thread,
) -> None:
    assert watching.is_alive()
    # Writing the file in place can race the watcher's start; keep touching it until seen.
    replace_atomically(policy_file, INVALID)
    wait_until(lambda: recorder.errors or replace_atomically(policy_file, INVALID))
    assert "rules[0].aprovers" in str(recorder.errors[-1])
    assert store.current().sha256 == sha(V1)

    replace_atomically(policy_file, V2)
    wait_until(lambda: store.current().sha256 == sha(V2))
    # on_reload is called just after the new policy is in force: wait for it too
    wait_until(lambda: bool(recorder.reloads) and recorder.reloads[-1].sha256 == sha(V2))

    policy_file.write_text(V1)  # an in-place write is seen too
    wait_until(lambda: store.current().sha256 == sha(V1))


def test_watcher_filter_takes_the_file_and_configmap_swaps_only(policy_file: Path) -> None:
    _directory, accept = _filter_for(policy_file)
    assert _directory == policy_file.parent
    assert accept(Change.modified, str(policy_file))
    assert accept(Change.added, str(policy_file.parent / "..data"))
    assert accept(Change.deleted, str(policy_file.parent / "..data_tmp"))
    assert not accept(Change.modified, str(policy_file.parent / "opsgate.db"))
    assert not accept(Change.added, str(policy_file.parent / ".policy.yml.swp"))


def test_watcher_follows_a_configmap_volume_swap(tmp_path: Path, recorder: Recorder) -> None:
    """Kubernetes updates a ConfigMap volume by swapping the ``..data`` symlink: the file the bot
    reads (``policy.yml -> ..data/policy.yml``) never changes itself."""
    mount = tmp_path / "mount"
    mount.mkdir()
    first = mount / "..2026_01_01"
    first.mkdir()
    (first / "policy.yml").write_text(V1)
    (mount / "..data").symlink_to(first.name)
    (mount / "policy.yml").symlink_to("..data/policy.yml")
    store = PolicyStore(mount / "policy.yml", on_reload=recorder.on_reload)
    stop = threading.Event()
    thread = watch_policy(store, stop, debounce=50, step=10, rust_timeout=200)
    try:
        second = mount / "..2026_01_02"
        second.mkdir()
        (second / "policy.yml").write_text(V2)
        tmp_link = mount / "..data_tmp"
        tmp_link.symlink_to(second.name)
        os.replace(tmp_link, mount / "..data")
        wait_until(lambda: store.current().sha256 == sha(V2))
        # on_reload is called just after the new policy is in force: wait for it too
        wait_until(lambda: bool(recorder.reloads))
        assert [r.sha256 for r in recorder.reloads] == [sha(V2)]
    finally:
        stop.set()
        thread.join(timeout=10)


def test_sighup_reloads(store: PolicyStore, policy_file: Path, recorder: Recorder) -> None:
    previous = signal.getsignal(signal.SIGHUP)
    try:
        assert install_sighup(store) is True
        policy_file.write_text(V2)
        os.kill(os.getpid(), signal.SIGHUP)
        wait_until(lambda: store.current().sha256 == sha(V2))
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_sighup_outside_the_main_thread_is_a_no_op(store: PolicyStore) -> None:
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(install_sighup(store)))
    thread.start()
    thread.join()
    assert result == [False]
