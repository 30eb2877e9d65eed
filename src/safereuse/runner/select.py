"""Hyper-parameter selection on held-back data: choose on the holdout, report on the test split.

A spec with a ``select:`` section (see :mod:`safereuse.runner.spec`) runs in two phases:

1. **Selection.** Every point of a swept method (a method with more than one parameter point) is
   run as a *selection cell*: its student is trained on the usual pool minus ``holdout`` images
   (:attr:`safereuse.data.DataSpec.holdout`), and audited on those held-back images — the bundle's
   :meth:`~safereuse.data.DataBundle.holdout_view`, never its test split. The cells sit in the ledger
   under the tag ``<spec hash>/select`` (so the report of the run shows only phase 2).
2. **Choice and test.** Per group (scenario × method, or method alone with ``scope: all``) the rule
   picks one point from the seed-pooled validation numbers; the chosen points (and every method that
   has one point only) then run as the spec's normal cells, audited on the test split. A student is
   keyed by its data, method, configuration and seed, so phase 2 reuses the students of phase 1 and
   only audits them again.

Both phases go through the ledger, so an interrupted run resumes where it stopped; the choice is a
pure function of the phase-1 results, so a resumed run makes the same one. The run directory gets
``selection.json`` (the whole validation table — per-seed values, means, a note per point —, the rule,
the choices) and ``selection.md``. Phase 2 waits for its group: while a selection cell of a group is
failed or missing (retry with ``--retry-failed``), that group has no test cells and the run summary
counts them as not run.

Rules are registered in :data:`RULES`; a rule gets the seed-pooled rows of one group and returns the
chosen row with a note per row. SeaM / NNSlicer / CARTL defaults are chosen the same way: sweep their
parameters in a spec with ``select:``.
"""

from __future__ import annotations

import copy
import inspect
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..registry import Registry
from ..utils import atomic_path, config_hash, write_json_atomic
from .ledger import Ledger
from .spec import SECTION_CHECKS, Cell, LoadedSpec, expand

SELECTION_JSON, SELECTION_MD = "selection.json", "selection.md"

#: Selection rules (``select.rule`` in a spec).
RULES: Registry[Any] = Registry("selection rule", "safereuse run (see the spec's select.rule)")

_EPS = 1e-9  # seed means are sums of floats: "within 3 points" must not hinge on the last bit


@dataclass
class Point:
    """One parameter point of one group, pooled over seeds.

    Attributes:
        label: the method point as the grid names it (``remos(criterion=nc,ratio=0.1)``).
        order: position of the point in the spec (ties go to the earlier one).
        acc: mean over seeds of the audit's clean accuracy on the holdout, percent.
        dir: mean over seeds of each measured defect's DIR on the holdout, percent.
        seeds: the seeds pooled.
        complete: every selection cell of the point is done.
    """

    label: str
    order: int
    acc: float = math.nan
    dir: dict[str, float] = field(default_factory=dict)
    seeds: list[int] = field(default_factory=list)
    complete: bool = False


def _key(p: Point, defect: str | None) -> float:
    v = p.dir.get(defect, math.nan) if defect else math.nan
    return math.inf if not math.isfinite(v) else v


@RULES.register(
    "min-dir-within", "lowest DIR of `defect` among points within `within` points of the best accuracy"
)
class MinDirWithin:
    """Lowest validation DIR among the points whose validation accuracy is within ``within`` points
    of the group's best; ties: higher accuracy, then spec order.

    Args:
        defect: the defect whose DIR is minimised (a name from the spec's ``defects:``).
        within: accuracy tolerance in percentage points (default 3).

    Example:
        >>> pts = [Point("a", 0, 80.0, {"p": 30.0}), Point("b", 1, 78.0, {"p": 10.0}),
        ...        Point("c", 2, 70.0, {"p": 1.0})]
        >>> i, notes = MinDirWithin("p", within=3).choose(pts)
        >>> pts[i].label, notes[2]
        ('b', 'acc 70.0 < 77.0 (best 80.0 − 3)')
    """

    def __init__(self, defect: str, within: float = 3.0) -> None:
        self.defect, self.within = defect, float(within)

    def choose(self, points: list[Point]) -> tuple[int, list[str]]:
        """Index of the chosen point and a note per point."""
        best = max(p.acc for p in points)
        floor = best - self.within
        notes, ok = [], []
        for i, p in enumerate(points):
            if p.acc + _EPS >= floor:
                ok.append(i)
                notes.append("eligible")
            else:
                notes.append(f"acc {p.acc:.1f} < {floor:.1f} (best {best:.1f} − {self.within:g})")
        i = min(ok, key=lambda j: (_key(points[j], self.defect), -points[j].acc, points[j].order))
        notes[i] = "chosen"
        return i, notes


@RULES.register("max-acc", "highest validation accuracy (ties: spec order)")
class MaxAcc:
    """Highest validation accuracy; ties go to the earlier point of the spec.

    Example:
        >>> MaxAcc().choose([Point("a", 0, 80.0), Point("b", 1, 81.0)])
        (1, ['', 'chosen'])
    """

    def choose(self, points: list[Point]) -> tuple[int, list[str]]:
        """Index of the chosen point and a note per point."""
        i = min(range(len(points)), key=lambda j: (-points[j].acc, points[j].order))
        return i, ["chosen" if j == i else "" for j in range(len(points))]


def rule_params(loaded: LoadedSpec) -> dict[str, Any]:
    """The ``select:`` keys that are parameters of its rule (``defect``, ``within``), as given."""
    sel = loaded.spec.select
    assert sel is not None
    return {k: getattr(sel, k) for k in ("defect", "within") if getattr(sel, k) is not None}


def _resolved_params(loaded: LoadedSpec) -> dict[str, Any]:
    """The rule's parameters with its defaults filled in (what ``selection.json`` records)."""
    sel = loaded.spec.select
    assert sel is not None
    sig = inspect.signature(RULES.get(sel.rule)).parameters
    defaults = {k: p.default for k, p in sig.items() if p.default is not inspect.Parameter.empty}
    return {**defaults, **rule_params(loaded)}


def make_rule(loaded: LoadedSpec) -> Any:
    """The rule object of the spec's ``select:`` section (checked by :func:`check_select`)."""
    sel = loaded.spec.select
    assert sel is not None
    return RULES.get(sel.rule)(**rule_params(loaded))


# -- the grid of both phases -----------------------------------------------------------------------
def swept_methods(cells: list[Cell]) -> set[str]:
    """Methods with more than one parameter point in ``cells``: the ones selection chooses for."""
    labels: dict[str, set[str]] = {}
    for c in cells:
        labels.setdefault(c.method, set()).add(c.label)
    return {m for m, ls in labels.items() if len(ls) > 1}


def _measured(loaded: LoadedSpec, config: dict[str, Any]) -> list[dict[str, Any]]:
    sel = loaded.spec.select
    assert sel is not None
    wanted = set(sel.defects) if sel.defects else None
    return [d for d in config["defects"] if wanted is None or d["name"] in wanted]


def selection_cells(loaded: LoadedSpec, cells: list[Cell] | None = None) -> list[Cell]:
    """Phase 1: the cells of the swept methods, audited on the holdout for the measured defects.

    Args:
        loaded: a spec with a ``select:`` section.
        cells: its :func:`~safereuse.runner.spec.expand` (computed when None).

    Returns:
        One selection cell per cell of a swept method (same student, same order and label; the
        config's ``audit.split`` is ``holdout`` and its defects are ``select.defects``).
    """
    cells = expand(loaded) if cells is None else cells
    swept = swept_methods(cells)
    out = []
    for c in cells:
        if c.method not in swept:
            continue
        cfg = copy.deepcopy(c.config)
        cfg["defects"] = _measured(loaded, cfg)
        cfg["audit"] = {**cfg["audit"], "split": "holdout"}
        out.append(Cell(config_hash(cfg, 12), cfg, c.order, c.label))
    return out


def _group(loaded: LoadedSpec, scenario: str, method: str) -> tuple[str, str]:
    sel = loaded.spec.select
    assert sel is not None
    return ("*" if sel.scope == "all" else scenario, method)


def _defect_names(config: dict[str, Any]) -> list[str]:
    """Column names of a cell's defects: the name, ``name#2``… when a name has several points."""
    seen: dict[str, int] = {}
    out = []
    for d in config["defects"]:
        seen[d["name"]] = seen.get(d["name"], 0) + 1
        out.append(d["name"] if seen[d["name"]] == 1 else f"{d['name']}#{seen[d['name']]}")
    return out


def check_select(loaded: LoadedSpec) -> None:
    """Check a spec's ``select:`` section against its rule, defects and grid.

    Raises:
        SafeReuseError: an unknown rule, a rule parameter the rule does not take or lacks, a measured
            defect that the spec does not audit, a rule defect not measured in every swept scenario,
            or no method with more than one point; the message names the key and its YAML line.
    """
    sel = loaded.spec.select
    assert sel is not None
    loc = ("select",)
    if sel.rule not in RULES:
        raise loaded.error(
            loc + ("rule",),
            f"unknown selection rule {sel.rule!r}",
            fix=f"use one of: {', '.join(RULES.names())}",
        )
    cls = RULES.get(sel.rule)
    sig = inspect.signature(cls).parameters
    given = rule_params(loaded)
    for key in given:
        if key not in sig:
            raise loaded.error(
                loc + (key,),
                f"selection rule {sel.rule!r} has no parameter {key!r}",
                fix=f"remove it (the rule takes: {', '.join(sig) or 'nothing'})",
            )
    for key, p in sig.items():
        if p.default is inspect.Parameter.empty and key not in given:
            raise loaded.error(
                loc + ("rule",), f"selection rule {sel.rule!r} needs {key!r}", fix=f"add {key}: ..."
            )
    names = [d.name for d in loaded.spec.defects]
    for j, name in enumerate(sel.defects or []):
        if name not in names:
            raise loaded.error(
                loc + ("defects", j),
                f"{name!r} is not a defect of this spec",
                fix=f"measure defects listed under defects: ({', '.join(names)})",
            )
    cells = selection_cells(loaded)
    if not cells:
        raise loaded.error(
            loc,
            "no method has more than one parameter point, so there is nothing to select",
            fix="sweep a parameter (e.g. params: {ratio: [0.1, 0.2]}) or remove select:",
        )
    defect = given.get("defect")
    if defect is not None:
        if defect not in names:
            raise loaded.error(
                loc + ("defect",),
                f"{defect!r} is not a defect of this spec",
                fix=f"use one of: {', '.join(names)}",
            )
        if sel.defects and defect not in sel.defects:
            raise loaded.error(
                loc + ("defect",), f"{defect!r} is not measured", fix="add it to select.defects"
            )
        for c in cells:
            cols = _defect_names(c.config)
            if defect not in cols:
                raise loaded.error(
                    loc + ("defect",),
                    f"{defect!r} is not audited in scenario {c.scenario!r}",
                    fix="choose a defect every scenario audits (a backdoor only where its teacher plants it)",
                )
            if f"{defect}#2" in cols:
                raise loaded.error(
                    loc + ("defect",),
                    f"{defect!r} has several parameter points, so its DIR is ambiguous",
                    fix="sweep the defect in another spec, or give it one point",
                )


SECTION_CHECKS["select"] = check_select  # run by load_spec (spec.py cannot import this module)


# -- the validation table and the choice -----------------------------------------------------------
def validation_table(loaded: LoadedSpec, sel_cells: list[Cell], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Pool the selection cells' results over seeds and apply the rule per group.

    Reads only the audits of the selection cells (accuracy and DIR on the holdout); the students'
    test-split accuracy in the same rows is never looked at.

    Args:
        loaded: the spec.
        sel_cells: :func:`selection_cells`.
        rows: ledger rows of those cells (any order; others are ignored).

    Returns:
        ``{"rule", "holdout", "groups": [{"scenario", "method", "points": [{"label", "order", "config",
        "params", "acc", "dir", "acc_seeds", "dir_seeds", "seeds", "complete", "note"}], "chosen": label
        or None}]}`` in spec order (``scenario`` is ``*`` with ``scope: all``). A group is
        decided only when all of its selection cells are done.
    """
    sel = loaded.spec.select
    assert sel is not None
    by_id = {r["id"]: r for r in rows}
    groups: dict[tuple[str, str], dict[str, Any]] = {}
    per_point: dict[tuple[tuple[str, str], str], dict[str, Any]] = {}
    for c in sel_cells:
        g = _group(loaded, c.scenario, c.method)
        grp = groups.setdefault(g, {"scenario": g[0], "method": g[1], "points": []})
        pk = (g, c.label)
        if pk not in per_point:
            per_point[pk] = {
                "label": c.label,
                "order": c.order,
                "config": c.config["method"]["config"],
                "params": c.config["method"]["params"],
                "acc_seeds": [],
                "dir_seeds": {},
                "seeds": [],
                "complete": True,
            }
            grp["points"].append(per_point[pk])
        pt = per_point[pk]
        pt["order"] = min(pt["order"], c.order)
        r = by_id.get(c.id)
        if r is None or r["status"] != "done":
            pt["complete"] = False
            continue
        audit = (r["metrics"] or {}).get("audit") or {}
        pt["seeds"].append(c.seed)
        pt["acc_seeds"].append(_num((audit.get("acc") or {}).get("value")))
        for name, row in zip(_defect_names(c.config), audit.get("rows") or [], strict=False):
            pt["dir_seeds"].setdefault(name, []).append(_num(row.get("dir")))
    rule = make_rule(loaded)
    out_groups = []
    for grp in groups.values():
        pts = []
        for p in grp["points"]:
            p["acc"] = _mean(p["acc_seeds"])
            p["dir"] = {k: _mean(v) for k, v in p["dir_seeds"].items()}
            pts.append(Point(p["label"], p["order"], p["acc"], p["dir"], sorted(p["seeds"]), p["complete"]))
        grp["chosen"] = None
        if all(p.complete for p in pts):
            i, notes = rule.choose(pts)
            grp["chosen"] = pts[i].label
            for p, note in zip(grp["points"], notes, strict=True):
                p["note"] = note
        out_groups.append(grp)
    return {
        "rule": {"name": sel.rule, **_resolved_params(loaded), "scope": sel.scope, "pool": sel.pool},
        "holdout": sel.holdout,
        "groups": out_groups,
    }


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


def _mean(vs: list[float]) -> float:
    vs = [v for v in vs if math.isfinite(v)]
    return sum(vs) / len(vs) if vs else math.nan


def chosen_cells(loaded: LoadedSpec, cells: list[Cell], table: dict[str, Any]) -> list[Cell]:
    """Phase 2: the spec's cells of the chosen points (labelled by the method's name) and of every
    method that was not swept. Groups not yet decided contribute nothing."""
    swept = swept_methods(cells)
    chosen = {(g["scenario"], g["method"]): g["chosen"] for g in table["groups"]}
    out = []
    for c in cells:
        if c.method not in swept:
            out.append(c)
        elif chosen.get(_group(loaded, c.scenario, c.method)) == c.label:
            out.append(Cell(c.id, c.config, c.order, c.method))
    return out


def n_test_cells(cells: list[Cell]) -> int:
    """How many phase-2 cells the spec has once every group is decided."""
    swept = swept_methods(cells)
    return sum(c.method not in swept for c in cells) + len(
        {(c.scenario, c.method, c.seed) for c in cells if c.method in swept}
    )


# -- writing ---------------------------------------------------------------------------------------
def _f(v: Any) -> str:
    return "n/a" if not isinstance(v, (int, float)) or not math.isfinite(v) else f"{v:.1f}"


def selection_markdown(table: dict[str, Any]) -> str:
    """``selection.md``: the rule, the validation table of every group, the choices."""
    r = table["rule"]
    params = ", ".join(f"{k}={v}" for k, v in r.items() if k != "name")
    lines = [
        "# Hyper-parameter selection",
        "",
        f"Rule: `{r['name']}` ({params}); seeds pooled by their {r['pool']}. Validation split: "
        f"{table['holdout']} images held back from each student's training pool (disjoint from its train, "
        "validation and test images; the same images for every seed). ACC and DIR are percentages on "
        "those images; the test split is not used. The chosen points run on the test split as the "
        "run's normal cells (the report).",
        "",
        "## Chosen",
        "",
        "| scenario | method | chosen |",
        "|---|---|---|",
    ]
    for g in table["groups"]:
        lines.append(f"| {g['scenario']} | {g['method']} | {g['chosen'] or 'undecided (cells missing)'} |")
    for g in table["groups"]:
        defects = list(dict.fromkeys(k for p in g["points"] for k in p["dir"]))
        lines += ["", f"## {g['scenario']} · {g['method']}", ""]
        lines.append("| point | seeds | ACC | " + " | ".join(f"DIR {d}" for d in defects) + " | note |")
        lines.append("|---" * (len(defects) + 4) + "|")
        for p in g["points"]:
            name = f"**{p['label']}**" if p["label"] == g["chosen"] else p["label"]
            dirs = " | ".join(_f(p["dir"].get(d)) for d in defects)
            seeds = ",".join(str(s) for s in p["seeds"]) or "–"
            lines.append(f"| {name} | {seeds} | {_f(p['acc'])} | {dirs} | {p.get('note', '')} |")
    return "\n".join(lines) + "\n"


def write_selection(rundir: Path, table: dict[str, Any]) -> None:
    """Write ``selection.json`` and ``selection.md`` into the run directory (atomically)."""
    clean = json.loads(json.dumps(table, default=str), parse_constant=lambda c: None)  # NaN → null
    write_json_atomic(rundir / SELECTION_JSON, clean)
    with atomic_path(rundir / SELECTION_MD) as tmp:
        tmp.write_text(selection_markdown(table))


# -- the phase driver ------------------------------------------------------------------------------
def select_tag(spec_hash: str) -> str:
    """The ledger's ``spec_hash`` column of selection cells (keeps them out of the run's report)."""
    return f"{spec_hash}/select"


@dataclass
class SelectionPhase:
    """Phase 1 of a run with ``select:``, as :func:`safereuse.runner.run` drives it.

    Attributes:
        loaded: the spec.
        cells: its full grid (:func:`~safereuse.runner.spec.expand`).
        sel_cells: the selection cells.
        ran: selection cells run this time.
        table: the validation table after :meth:`run`.
    """

    loaded: LoadedSpec
    cells: list[Cell]
    sel_cells: list[Cell] = field(default_factory=list)
    ran: int = 0
    table: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.sel_cells = selection_cells(self.loaded, self.cells)

    def run(
        self,
        ledger: Ledger,
        spec_hash: str,
        rundir: Path,
        schedule: Callable[[list[Cell]], None],
        retry_failed: bool = False,
    ) -> list[Cell]:
        """Run the selection cells still to do, choose, write ``selection.*``; return phase 2's cells."""
        tag = select_tag(spec_hash)
        ledger.add_cells(self.sel_cells, tag)
        ids = set(ledger.to_run([c.id for c in self.sel_cells], retry_failed=retry_failed))
        todo = [c for c in self.sel_cells if c.id in ids]
        self.ran = len(todo)
        schedule(todo)
        self.table = validation_table(self.loaded, self.sel_cells, ledger.rows(tag))
        write_selection(rundir, self.table)
        return chosen_cells(self.loaded, self.cells, self.table)

    def totals(
        self, ledger: Ledger, spec_hash: str, counts: dict[str, int], failures: list[Any], n_test_run: int
    ) -> tuple[int, dict[str, int], list[Any]]:
        """Both phases together: ``(total cells, status counts, failures)``; phase-2 cells of undecided
        groups count as pending."""
        sel_counts = ledger.status_counts(select_tag(spec_hash))
        merged = {k: counts.get(k, 0) + sel_counts.get(k, 0) for k in set(counts) | set(sel_counts)}
        expected = n_test_cells(self.cells)
        merged["pending"] = merged.get("pending", 0) + max(0, expected - n_test_run)
        sel_failures = [
            (r["id"], f"selection {r['scenario']}/{r['label']}/seed {r['seed']}", r["error"] or "")
            for r in ledger.rows(select_tag(spec_hash))
            if r["status"] == "failed"
        ]
        return len(self.sel_cells) + expected, merged, sel_failures + list(failures)


__all__ = [
    "RULES",
    "SELECTION_JSON",
    "SELECTION_MD",
    "MaxAcc",
    "MinDirWithin",
    "Point",
    "SelectionPhase",
    "check_select",
    "make_rule",
    "n_test_cells",
    "rule_params",
    "select_tag",
    "selection_cells",
    "selection_markdown",
    "swept_methods",
    "chosen_cells",
    "validation_table",
    "write_selection",
]
