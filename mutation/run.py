"""``make mutation``: mutation testing of opsgate's decision core with mutmut.

Runs mutmut (configured in ``pyproject.toml``, ``[tool.mutmut]``) over the functions listed in
:data:`TARGETS` -- the policy decision, the request lifecycle and the gate's approval path --
against the tests that cover them, on SQLite (mutmut's workers run in parallel and the tests wipe
the database they use, so a shared PostgreSQL is out). Then prints, per module, how many mutants
the tests killed, the kill rate over the mutants that are not equivalent, and every survivor as a
diff, and exits 1 when a module's rate is under the threshold (95 %).

An equivalent mutant (one no test can tell from the original) is listed in
``mutation/equivalent.toml`` with its function, its diff and why; a listed one that no longer
survives, or no longer exists, is reported so that the list stays true.

Usage: ``python mutation/run.py [--threshold 95] [--max-children N] [--keep]``; ``--keep``
reuses ``mutants/`` from the last run (mutmut then regenerates only what changed).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections import Counter
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EQUIVALENT = ROOT / "mutation" / "equivalent.toml"
LOG = ROOT / "mutants" / "mutmut-run.log"

TARGETS: dict[str, list[str]] = {
    "approvals/policy/rules.py": [
        "x_decide",
        "x__deciding",
        "x__unmatched",
        "x_freeze_in_force",
        "x_rule_settings",
        "x_rule_denies",
        "x_change_freeze",
        "x_reason_required",
        "x_break_glass",
        "x_auto_approval",
        "x_enough_approvers",
        "x_needs_approval",
        "xǁDecidingǁ*",
    ],
    "approvals/policy/decision.py": [
        "x_mismatches",
        "x_as_listed",
        "x_resolve_steps",
        "x_step_members",
        "x_needs_text",
        "x_count_satisfied",
        "x_approval_refusal",
        "xǁDecisionǁ*",
    ],
    "approvals/policy/lookup.py": ["x_requester_kind"],
    "approvals/policy/model.py": [
        "x_actions_covered",
        "x_matches_any",
        "x_is_reversible",
        "xǁFreezeǁin_force",
        "xǁFreezeǁwindow",
        "xǁRuleBaseǁstep_models",
        "xǁRuleBaseǁextend_mode",
    ],
    "approvals/lifecycle.py": [
        "x_transition",
        "x__check",
        "x_rows_changed",
        "x_record",
        "x__event",
    ],
    "approvals/gate/deciding.py": [
        "xǁDecidingǁapprove",
        "xǁDecidingǁdeny",
        "xǁDecidingǁ_decidable",
        "xǁDecidingǁ_locked",
        "xǁDecidingǁ_refusal",
        "xǁDecidingǁ_refresh_approvers",
        "xǁDecidingǁacknowledge",
    ],
    "approvals/gate/reading.py": ["xǁReadingǁpending_for"],
    "approvals/gate/views.py": ["x_steps_of"],
}
"""For each mutated file, the functions whose mutants are run (mutmut's names: ``x_<function>``
or ``xǁ<Class>ǁ<method>``; ``*`` as in a shell)."""

KILLED = {"killed", "timeout", "caught by type check", "segfault"}


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    status: str


def module_of(path: str) -> str:
    return path.removesuffix(".py").replace("/", ".")


def globs() -> list[str]:
    return [f"{module_of(p)}.{f}__mutmut_*" for p, functions in TARGETS.items() for f in functions]


def targeted(name: str) -> bool:
    return any(fnmatchcase(name, g) for g in globs())


def function_of(name: str) -> str:
    return name.rpartition("__mutmut_")[0]


def run_mutmut(max_children: int, keep: bool) -> float:
    """Run mutmut over :data:`TARGETS`; returns the seconds it took. Its output goes to
    ``mutants/mutmut-run.log`` (it redraws a progress line many times a second)."""
    if not keep:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
    (ROOT / "mutants").mkdir(exist_ok=True)
    env = {
        k: v for k, v in os.environ.items() if k not in ("OPSGATE_TEST_DATABASE_URL", "PYTHONPATH")
    }
    command = [sys.executable, "-m", "mutmut", "run", "--max-children", str(max_children), *globs()]
    print(
        f"mutation: mutmut over {sum(map(len, TARGETS.values()))} functions of "
        f"{', '.join(TARGETS)} ({max_children} workers; log: {LOG.relative_to(ROOT)})",
        flush=True,
    )
    started = time.monotonic()
    with LOG.open("w") as log:
        done = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        print(LOG.read_text(errors="replace")[-4000:], file=sys.stderr)
        sys.exit(f"mutation: mutmut failed (exit {done.returncode}); see {LOG}")
    return elapsed


def results() -> list[Mutant]:
    from mutmut.stats import status_by_exit_code

    found = []
    for path in TARGETS:
        meta = ROOT / "mutants" / f"{path}.meta"
        if not meta.exists():
            sys.exit(f"mutation: mutmut left no results for {path} ({meta} is missing)")
        codes: dict[str, int | None] = json.loads(meta.read_text())["exit_code_by_key"]
        found += [
            Mutant(name, path, status_by_exit_code[code])
            for name, code in codes.items()
            if targeted(name)
        ]
    return sorted(
        found, key=lambda m: (m.path, function_of(m.name), int(m.name.rpartition("_")[2]))
    )


def changed_lines(mutant: Mutant) -> tuple[str, ...]:
    """The lines the mutant removes (``-``) and adds (``+``), stripped."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    diff = get_diff_for_mutant(mutant.name, path=Path(mutant.path))
    return tuple(
        line[0] + line[1:].strip()
        for line in diff.splitlines()
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    )


def diff_text(mutant: Mutant) -> str:
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    diff = get_diff_for_mutant(mutant.name, path=Path(mutant.path)).splitlines()
    return "\n".join("      " + line for line in diff[2:])


def load_equivalents() -> list[dict[str, object]]:
    listed = tomllib.loads(EQUIVALENT.read_text())["equivalent"]
    for entry in listed:
        if not {"function", "diff", "why"} <= set(entry):
            sys.exit(f"mutation: {EQUIVALENT.name}: an entry needs function, diff and why: {entry}")
    return listed


def report(mutants: list[Mutant], threshold: float) -> bool:
    os.chdir(ROOT)  # mutmut's helpers read pyproject.toml and mutants/ from here
    equivalents = load_equivalents()
    used: set[int] = set()
    equivalent: dict[str, str] = {}
    for mutant in mutants:
        if mutant.status in KILLED:
            continue
        lines = changed_lines(mutant)
        for i, entry in enumerate(equivalents):
            wanted = tuple(line[0] + line[1:].strip() for line in entry["diff"])  # type: ignore[union-attr]
            if entry["function"] == function_of(mutant.name) and wanted == lines:
                equivalent[mutant.name] = str(entry["why"])
                used.add(i)
                break

    ok = True
    print()
    print(f"{'module':<30}{'mutants':>9}{'killed':>8}{'equiv.':>8}{'survived':>10}{'rate':>9}")
    for path in TARGETS:
        mine = [m for m in mutants if m.path == path]
        counts = Counter(
            "killed" if m.status in KILLED else "equivalent" if m.name in equivalent else "survived"
            for m in mine
        )
        relevant = len(mine) - counts["equivalent"]
        rate = 100.0 * counts["killed"] / relevant if relevant else 100.0
        ok = ok and rate >= threshold
        print(
            f"{module_of(path):<30}{len(mine):>9}{counts['killed']:>8}{counts['equivalent']:>8}"
            f"{counts['survived']:>10}{rate:>8.1f}%"
        )
    killed = sum(m.status in KILLED for m in mutants)
    relevant = len(mutants) - len(equivalent)
    total_rate = 100.0 * killed / relevant if relevant else 100.0
    print(
        f"{'all':<30}{len(mutants):>9}{killed:>8}{len(equivalent):>8}"
        f"{relevant - killed:>10}{total_rate:>8.1f}%"
    )

    survivors = [m for m in mutants if m.status not in KILLED and m.name not in equivalent]
    if survivors:
        print(f"\nsurvivors ({len(survivors)}; `mutmut show NAME` shows one again):")
        for mutant in survivors:
            print(f"  {mutant.name} [{mutant.status}]")
            print(diff_text(mutant))
    stale = [e for i, e in enumerate(equivalents) if i not in used]
    if stale:
        print(f"\n{EQUIVALENT.name}: {len(stale)} listed mutant(s) no longer survive or exist:")
        for entry in stale:
            print(f"  {entry['function']}: {' / '.join(entry['diff'])}")  # type: ignore[arg-type]
    print(
        f"\nmutation: {total_rate:.1f}% of {relevant} non-equivalent mutants killed "
        f"(threshold {threshold:.0f}% in each module): {'PASS' if ok else 'FAIL'}"
    )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threshold", type=float, default=95.0, help="percent, per module")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--keep", action="store_true", help="reuse mutants/ from the last run")
    args = parser.parse_args()
    elapsed = run_mutmut(args.max_children, args.keep)
    mutants = results()
    ok = report(mutants, args.threshold)
    print(f"mutation: {len(mutants)} mutants in {elapsed / 60:.1f} min")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
