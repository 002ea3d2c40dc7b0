"""Run ids are the store's keys: a stored run is found again, skipped or redone, by the id its plan gets. Every
plan of the built-in synthetic protocols x built-in methods x budgets (clean, and one noise setting at `quick`)
must keep the id recorded in `data/run_ids.json`, so that a refactor of how specs are typed or serialised
cannot silently orphan the runs users have stored.

An intended change of identity (a new code version, a changed default) re-records them:
`python tests/test_run_ids.py`, and the commit says why the ids moved.
"""

import json
import sys
from pathlib import Path

from aunce_bench.protocols import parse_noise, plan_runs
from aunce_bench.specs import available, load_method, load_protocol

RECORDED = Path(__file__).parent / "data" / "run_ids.json"


def planned_ids() -> dict[str, str]:
    """`protocol/method/budget/noise/fold` -> run id, for every synthetic built-in protocol and built-in method."""
    ids = {}
    for protocol in (load_protocol(found.name) for found in available("protocols")):
        if not protocol.synthetic:
            continue
        for method in (load_method(found.name) for found in available("methods")):
            for budget in protocol.budgets:
                for noise in ["none", "symmetric:0.2"] if budget == "quick" else ["none"]:
                    for run in plan_runs(method, protocol, budget, None, [0], parse_noise(noise)):
                        ids[f"{protocol.name}/{method.name}/{budget}/{noise}/{run.fold_name}"] = run.run_id
    return ids


def test_built_in_plans_keep_their_recorded_run_ids(monkeypatch):
    monkeypatch.delenv("AUNCE_BENCH_PATH", raising=False)  # built-in specs only
    recorded, planned = json.loads(RECORDED.read_text()), planned_ids()
    changed = sorted(key for key in recorded if key in planned and planned[key] != recorded[key])
    assert changed == [], f"{len(changed)} run ids changed, e.g. {changed[:3]}"
    assert sorted(set(recorded) - set(planned)) == []  # a plan that disappeared orphans its stored runs
    # new methods or protocols add ids; record them with the script below
    assert sorted(set(planned) - set(recorded)) == [], "new plans: re-record with python tests/test_run_ids.py"


if __name__ == "__main__":
    RECORDED.write_text(json.dumps(planned_ids(), indent=0, sort_keys=True) + "\n")
    print(f"recorded {len(json.loads(RECORDED.read_text()))} run ids in {RECORDED}", file=sys.stderr)
