"""The runner's crafting step: sets crafted on a teacher are made once, by a ``craft`` task that runs
before the cells of their group, and the cells' results are the same whether it ran or not."""

from __future__ import annotations

import torch

from safereuse.artifacts import load_model
from safereuse.runner import Ledger, load_spec, run
from safereuse.runner import worker as worker_mod
from safereuse.runner.executors import SequentialExecutor
from test_runner import TINY, spec_file

SPEC = TINY.replace("lr: [0.01, 0.05]", "lr: 0.01")  # 2 methods × 2 seeds


class Recording(SequentialExecutor):
    """Runs tasks in this process and records their names in submission order."""

    def __init__(self) -> None:
        super().__init__()
        self.tasks: list[str] = []

    def submit(self, task, payload):
        self.tasks.append(task)
        return super().submit(task, payload)


def _audit_rows(out):
    with Ledger(out / "ledger.sqlite", create=False) as led:
        return {r["id"]: r["metrics"]["audit"]["rows"] for r in led.rows()}


def _strip(rows):
    return [{k: v for k, v in r.items() if k not in ("seconds", "cached")} for r in rows]


def test_craft_tasks_run_first_and_every_cell_reads_the_cache(tmp_path):
    ex = Recording()
    s = run(load_spec(spec_file(tmp_path, SPEC)), tmp_path / "run", executor=ex, progress=False)
    assert s.counts["done"] == 4 and not s.failures
    # the teacher, then one craft task per teacher × student data (the data's seed follows the cell's)
    assert ex.tasks == ["teacher", "craft", "craft", "cell", "cell", "cell", "cell"]
    rows = _audit_rows(tmp_path / "run")
    assert all(r[0]["defect"] == "penultimate" and r[0]["cached"] for r in rows.values())
    assert len(list((tmp_path / "run" / "defects").rglob("*.safetensors"))) == 1  # one test set


def test_results_do_not_depend_on_the_craft_task(tmp_path, monkeypatch):
    spec = load_spec(spec_file(tmp_path, SPEC))
    run(spec, tmp_path / "with", progress=False)

    def broken(*args, **kwargs):
        raise RuntimeError("no crafting here")

    monkeypatch.setattr(worker_mod, "precraft", broken)  # each cell crafts under the lock itself
    s = run(spec, tmp_path / "without", progress=False)
    assert s.counts["done"] == 4 and not s.failures
    with_, without = _audit_rows(tmp_path / "with"), _audit_rows(tmp_path / "without")
    assert with_.keys() == without.keys()
    assert all(_strip(with_[k]) == _strip(without[k]) for k in with_)
    assert sum(not r[0]["cached"] for r in without.values()) == 1  # the first cell crafted it


def test_a_worker_reuses_its_teacher_without_changing_it(tmp_path):
    out = tmp_path / "run"
    run(load_spec(spec_file(tmp_path, SPEC)), out, progress=False)  # --jobs 1: this process's memo
    t_dir = next((out / "teachers").iterdir())
    cached = worker_mod._load_teacher(t_dir)
    assert worker_mod._load_teacher(t_dir) is cached
    fresh = load_model(t_dir)
    state = fresh.model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in cached.model.state_dict().items())
    assert not cached.model.training
    assert all(p.requires_grad for p in cached.model.parameters())
