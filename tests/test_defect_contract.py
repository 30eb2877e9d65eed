"""The defect contract, generated from one declarative table: a new defect is one class plus one row.

Every registered defect must have exactly one row in :data:`TABLE` (a defect without a row fails the
suite, and so does a row without a defect). Each row names the defect, the parameters that keep it
fast, and the scenario it needs: ``clean`` (a trained teacher and a fine-tuned student on the same
task) or ``planted`` (a teacher that carries this very defect, planted with the row's parameters, and
a student of it). The tests then check, for every row, through the public audit:

- ``probe`` returns its rates as :class:`~safereuse.metrics.Rate` objects with counts, a DIR taken
  over the student's clean-correct set, every rate within [0, 100];
- an attack never raises the accuracy of the model it was crafted on, and Rob never exceeds ACC;
- teacher and student leave the audit bit-identical, with no hook left behind (``assert_no_trace``);
- the declared capabilities hold: a defect ``crafted_on_teacher`` gives the same crafted set to every
  student of a teacher (the runner crafts it once, under a lock); a defect ``planted_in_teacher`` is
  refused for a teacher that does not carry it.

Tiny models (smallcnn width 8 on scikit-learn digits 0-2) and 32 audited images keep it fast.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch

from safereuse.data import load_data
from safereuse.defects import DEFECTS, Defect, audit
from safereuse.defects.probe import ProbeContext
from safereuse.errors import SafeReuseError
from safereuse.metrics import Rate
from safereuse.models import create_model
from safereuse.train import FitConfig, fit, predict

N = 32
FAST = dict(progress=False, batch_size=32, lr=0.05, device="cpu")


@dataclass(frozen=True)
class Row:
    """One defect of the contract table."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    scenario: str = "clean"  # "clean" | "planted" (the teacher carries this defect, planted with kwargs)
    input: str = "image"  # "image" (smallcnn on digits) | "text" (tiny random BERT on toy sentences)
    dir_over: str = "correct"  # DIR's set: "correct" (C) | "correct-non-target" (NLP label-flip rate)


TABLE = [
    Row("penultimate", {"steps": 3}),
    Row("mimic", {"steps": 3}),
    Row("nc-guided", {"steps": 2, "strategy": "dlfuzz"}),
    Row("pgd", {"steps": 3}),
    Row("fgsm"),
    Row("cw", {"binary_search_steps": 1, "max_iter": 3}),
    Row("deepfool", {"max_iter": 5}),
    Row("autoattack", {"steps": 3}),
    Row("deepfool-linf", {"max_iter": 5}),
    Row("jsma", {"gamma": 0.3}),
    Row("boundary", {"max_iter": 2, "num_trial": 2, "init_size": 5}),
    Row("spatial", {"num_translations": 2, "num_rotations": 2}),
    Row("pixel", {"max_iter": 2}),
    Row("gaussian-noise", {"sigma": 0.1}),
    Row("gaussian-blur", {"sigma": 0.5}),
    Row("badnets", {"poison_rate": 0.3}, "planted"),
    Row("blend", {"poison_rate": 0.3}, "planted"),
    Row("weight-poison", {"poison_rate": 0.3}, "planted"),
    Row("latent", {"clean_epochs": 1, "trigger_steps": 3}, "planted"),
    Row("word-trigger", {"poison_rate": 0.5}, "planted", "text", "correct-non-target"),
    Row("ripple", {"poison_rate": 0.5, "surgery_words": 3}, "planted", "text", "correct-non-target"),
    Row("pwws", {"max_synonyms": 3}, input="text"),
    Row("greedy-swap", {"max_synonyms": 3}, input="text"),
]
BY_NAME = {r.name: r for r in TABLE}


def test_the_table_is_every_registered_defect_exactly_once():
    names = [r.name for r in TABLE]
    assert len(names) == len(set(names)), "a defect has two rows"
    missing, extra = set(DEFECTS.names()) - set(names), set(names) - set(DEFECTS.names())
    assert not missing, f"defects without a row in the contract table: {sorted(missing)}"
    assert not extra, f"rows for defects that are not registered: {sorted(extra)}"


# -- scenarios ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def image_data():
    return load_data("digits", classes=[0, 1, 2], train_size=90)


@pytest.fixture(scope="module")
def text_data():
    """Toy sentiment sentences as token ids (16 tokens), under a sentiment dataset's name."""
    from safereuse.data import DataSpec
    from safereuse.data.core import build_bundle
    from safereuse.data.text import text_raw

    pos = ["good", "great", "superb", "fine", "nice", "lovely"]
    neg = ["bad", "awful", "poor", "dull", "weak", "ugly"]
    frames = ["the movie was {}", "a {} story", "{} acting", "what a {} film", "so {} overall"]
    texts = [f.format(w) for f in frames for w in pos + neg] * 3
    labels = [1 if w in pos else 0 for f in frames for w in pos + neg] * 3
    return build_bundle(text_raw("movie-sentences", texts, labels, max_len=16), DataSpec("movie-sentences"))


@pytest.fixture
def data(request, image_data, text_data):
    """The row's data: digits for image rows, toy sentences for text rows."""
    row = getattr(request.node, "callspec", None) and request.node.callspec.params.get("row")
    return text_data if row is not None and row.input == "text" else image_data


def _small(num_classes: int, text: bool = False):
    torch.manual_seed(0)
    if text:
        cfg = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
        return create_model("minilm", num_classes=num_classes, pretrained=False, config=cfg)
    return create_model("smallcnn", num_classes=num_classes, width=8, hidden=32)


def _fast(data) -> dict[str, Any]:
    return {**FAST, "optimizer": "adam", "lr": 3e-3} if not data.train.x.is_floating_point() else FAST


def _student_of(teacher, data, seed: int):
    """A copy of the teacher fine-tuned one epoch on ``data`` (a new head if the class count differs)."""
    s = copy.deepcopy(teacher)
    if s.num_classes != data.num_classes:
        s.reset_head(data.num_classes, seed=seed)
    fit(s, data.train, data.val, FitConfig(epochs=1, seed=seed, **_fast(data)))
    return s.eval()


@pytest.fixture(scope="module")
def scenarios(image_data, text_data):
    """``scenario(row) -> (teacher, student, other student, audit keywords)``, built once per teacher."""
    made: dict[str, tuple] = {}

    def get(row: Row):
        key = row.name if row.scenario == "planted" else f"clean-{row.input}"
        data = text_data if row.input == "text" else image_data
        if key not in made:
            teacher = _small(data.num_classes, row.input == "text")
            kw: dict[str, Any] = {"teacher_data": data.spec}
            if row.scenario == "planted":
                plant = DEFECTS.create(row.name, **row.kwargs).plant(
                    teacher, data, FitConfig(epochs=2, **_fast(data))
                )
                kw["backdoor"] = plant
                published = plant.record.get("published_classes")
                if published is not None:  # a latent backdoor's published head lacks the target
                    kw["teacher_data"] = {**data.spec.to_dict(), "classes": published}
            elif row.scenario == "clean":
                fit(teacher, data.train, data.val, FitConfig(epochs=4, **_fast(data)))
            else:  # pragma: no cover - a new scenario needs its builder here
                raise AssertionError(f"unknown scenario {row.scenario!r}")
            teacher.eval()
            made[key] = (teacher, _student_of(teacher, data, 0), _student_of(teacher, data, 1), kw)
        return made[key]

    return get


def _request(row: Row) -> tuple[str, dict[str, Any]]:
    """What the audit is asked for: a planted defect is audited as planted (its name only)."""
    return (row.name, {}) if row.scenario == "planted" else (row.name, dict(row.kwargs))


# -- the contract ---------------------------------------------------------------------------------
@pytest.mark.parametrize("row", TABLE, ids=lambda r: r.name)
def test_probe_contract(row, data, scenarios, assert_no_trace, monkeypatch):
    teacher, student, _, kw = scenarios(row)
    cls = DEFECTS.get(row.name)
    assert issubclass(cls, Defect) and cls.probe is not Defect.probe, "the defect must answer for itself"
    assert isinstance(cls.kind, str) and cls.kind, "a kind label for the report"

    crafted: list[tuple[str, torch.Tensor]] = []
    real_craft = ProbeContext.craft

    def spy(self, defect, role):
        x_adv, hit = real_craft(self, defect, role)
        crafted.append((role, x_adv))
        return x_adv, hit

    monkeypatch.setattr(ProbeContext, "craft", spy)
    with assert_no_trace(teacher, student, state=True):
        rep = audit(teacher, student, data, [_request(row)], max_samples=N, batch_size=16, device="cpu", **kw)
    (r,) = rep.rows
    assert r.defect == row.name and r.kind == cls.kind

    # rates with counts, within [0, 100]; DIR over the student's clean-correct set
    assert "dir" in r.rates and r.rates["acc"] is rep.acc
    for name, rate in r.rates.items():
        assert isinstance(rate, Rate), name
        assert 0 <= rate.k <= rate.n <= N, (name, rate)
        if rate.n:
            assert 0.0 <= rate.value <= 100.0 and 0.0 <= rate.ci_low <= rate.value <= rate.ci_high <= 100.0
            assert rate.value == pytest.approx(100 * rate.k / rate.n)
        else:
            assert math.isnan(rate.value)
    x, y = _audited(data)
    keep = torch.ones_like(y, dtype=torch.bool)
    if row.dir_over == "correct-non-target":
        keep = y != r.target["label"]
    assert r.rates["dir"].n == r.n == int(((predict(student, x).argmax(1) == y) & keep).sum()) <= rep.acc.k
    if "teacher" in r.rates:
        assert r.rates["teacher"].n == int(((predict(teacher, x).argmax(1) == y) & keep).sum())

    # an attack never raises the accuracy of the model it was crafted on; Rob never exceeds ACC
    # (a natural corruption declares raises_no_accuracy = False: it may also fix a wrong prediction)
    attack = getattr(cls, "raises_no_accuracy", True)
    if "rob" in r.rates and attack:
        assert r.rates["rob"].k <= rep.acc.k
    x, y = _audited(data)
    for role, x_adv in crafted:
        model = teacher if role == "teacher" else student
        assert x_adv.shape == x.shape
        clean = int((predict(model, x).argmax(1) == y).sum())
        if attack:
            assert int((predict(model, x_adv).argmax(1) == y).sum()) <= clean, role
    if cls.crafted_on_teacher:
        assert crafted and {role for role, _ in crafted} == {"teacher"}


def _audited(data):
    idx = torch.arange(N) * len(data.test) // N
    return data.test.x[idx], data.test.y[idx]


@pytest.mark.parametrize(
    "row", [r for r in TABLE if DEFECTS.get(r.name).crafted_on_teacher], ids=lambda r: r.name
)
def test_crafted_on_teacher_means_one_set_for_every_student(row, data, scenarios, tmp_path):
    """What lets the runner craft it once per teacher: another student reuses the cached set."""
    teacher, student, other, kw = scenarios(row)
    args = dict(max_samples=N, batch_size=16, device="cpu", cache_dir=tmp_path, **kw)
    first = audit(teacher, student, data, [_request(row)], **args)
    second = audit(teacher, other, data, [_request(row)], **args)
    assert (first.rows[0].cached, second.rows[0].cached) == (False, True)


@pytest.mark.parametrize(
    "row", [r for r in TABLE if DEFECTS.get(r.name).planted_in_teacher], ids=lambda r: r.name
)
def test_planted_in_teacher_is_refused_for_a_teacher_without_it(row, data, scenarios):
    clean = next(r for r in TABLE if r.scenario == "clean" and r.input == row.input)
    teacher, student, _, _ = scenarios(clean)  # the clean teacher
    with pytest.raises(SafeReuseError, match="no planted backdoor"):
        audit(teacher, student, data, [row.name], max_samples=4, device="cpu")
    other = next(r for r in TABLE if r.scenario == "planted" and r.name != row.name and r.input == row.input)
    t2, s2, _, kw = scenarios(other)
    with pytest.raises(SafeReuseError, match=f"carries a {other.name!r} backdoor"):
        audit(t2, s2, data, [row.name], max_samples=4, device="cpu", **kw)
