"""Experiment kinds through the runner and the report: any registered kind works, none is named.

A toy kind registered here (not one of NNSlicer's) runs through ``load_spec`` → ``expand`` → ``run`` →
``build_report``, so the runner and the report are shown to read only the registry and the kind's
declared report sections.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest

from safereuse.errors import SafeReuseError
from safereuse.registry import EXPERIMENTS, ExperimentCurve, ExperimentTable
from safereuse.report import build_report
from safereuse.report.experiments import experiment_sections
from safereuse.runner import expand, load_spec, run
from safereuse.runner.rundir import read_run_spec


@dataclass
class ToyKind:
    """Rows of a made-up curve: accuracy = k / 10 for every k, per seed."""

    report: ClassVar[tuple[ExperimentCurve | ExperimentTable, ...]] = (
        ExperimentCurve("Toy accuracy vs k", "k", (("acc", "toy"),)),
        ExperimentTable("Toy rows", ("scenario", "seed", "criterion", "k", "acc"), {"acc": 2}),
    )
    ks: list[int] = field(default_factory=lambda: [1, 2])
    scale: float = 0.1

    def __post_init__(self) -> None:
        if self.scale <= 0:
            raise SafeReuseError(f"scale {self.scale} must be > 0", fix="use e.g. scale: 0.1")

    def run(self, model: Any, bundle: Any, seed: int) -> list[dict[str, Any]]:
        assert bundle.num_classes == 3  # the teacher's own data slice
        return [{"criterion": "toy", "k": k, "acc": self.scale * k} for k in self.ks]


if "toy-kind" not in EXPERIMENTS:
    EXPERIMENTS.register("toy-kind")(ToyKind)

SPEC = """\
name: toy
experiment:
  kind: toy-kind
  params: {ks: [1, 2, 3]}
scenarios:
  - name: digits
    teacher: {arch: smallcnn, arch_kwargs: {width: 4, hidden: 16}, data: digits, classes: 0-2,
              epochs: 1, seed: 0}
seeds: [0, 1]
"""


def test_expansion_one_cell_per_scenario_and_seed_with_the_resolved_kind():
    cells = expand(load_spec("toy.yaml", text=SPEC))
    assert [(c.scenario, c.seed, c.label, c.config["task"]) for c in cells] == [
        ("digits", 0, "toy-kind", "experiment"),
        ("digits", 1, "toy-kind", "experiment"),
    ]
    assert cells[0].config["method"] == {
        "name": "toy-kind", "params": {"ks": [1, 2, 3]}, "config": {"ks": [1, 2, 3], "scale": 0.1},
    }  # fmt: skip
    assert cells[0].teacher_key == cells[1].teacher_key  # teacher seed fixed: one teacher


@pytest.mark.parametrize(
    ("change", "msg"),
    [
        (
            ("kind: toy-kind", "kind: toy-knd"),
            r"toy.yaml line 2: experiment: unknown experiment kind "
            r"'toy-knd' \(fix: did you mean 'toy-kind'",
        ),
        (("{ks: [1, 2, 3]}", "{ks: [1], scale: -1}"), r"line 2: experiment: scale -1 must be > 0"),
        (("{ks: [1, 2, 3]}", "{kz: [1]}"), r"line 2: experiment: .*kz"),
        (("seeds:", "methods: [{name: finetune}]\nseeds:"), "an experiment spec has no methods"),
    ],
)
def test_spec_errors_name_the_line(change, msg):
    with pytest.raises(SafeReuseError, match=msg):
        load_spec("toy.yaml", text=SPEC.replace(*change))


def test_a_toy_kind_runs_through_the_runner_and_the_report(tmp_path):
    out = tmp_path / "run"
    summary = run(load_spec("toy.yaml", text=SPEC), out, progress=False)
    assert summary.counts["done"] == 2, summary.failure_text()
    assert read_run_spec(out)["name"] == "toy"
    files = build_report(out)
    md = files.markdown.read_text()
    assert "Toy accuracy vs k (mean over subsets × seeds, 95 % t-interval)" in md
    assert "| toy | 3 | 2 | 30.0 [30.0, 30.0] |" in md  # k = 3 over 2 seeds: 0.3 both times
    assert "Toy rows" in md and "| 0.30 |" in md
    assert [p.name for p in files.figures if p.name.startswith("k_")] == ["k_digits.png"]


def test_an_unregistered_kind_still_gets_a_table_of_its_rows():
    cells = [{"scenario": "s", "seed": 0, "method": "gone-kind",
              "metrics": {"experiment": {"rows": [{"x": 1, "y": 0.5}]}}}]  # fmt: skip
    [(title, table, figs)] = experiment_sections(cells)
    assert title == "gone-kind" and list(table.columns) == ["scenario", "seed", "x", "y"] and figs == []


def test_the_report_reads_the_run_directory_format_not_the_driver():
    """``report/`` imports the run-directory format (``runner.rundir``, ``runner.ledger``), never the
    driver (``runner.core``), and no experiment kind by module."""
    import ast
    from pathlib import Path

    import safereuse.report as report_pkg

    for path in Path(report_pkg.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.endswith(("runner.core", "runner", "applications.experiments")), path
                assert "applications" not in node.module, path
