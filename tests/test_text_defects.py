"""Text defects: word-trigger poisoning, RIPPLe, word-level attacks (tiny random BERT, toy sentences)."""

from __future__ import annotations

import copy

import pytest
import torch

from safereuse.data import DataSpec
from safereuse.data.core import build_bundle
from safereuse.data.text import default_tokenizer, text_raw
from safereuse.defects import DEFECTS
from safereuse.defects.probe import AuditedModel, ProbeContext
from safereuse.defects.text import (
    PWWS,
    GreedySwap,
    Ripple,
    WordTrigger,
    embedding_surgery,
    insert_tokens,
    label_flip_rate,
    target_words,
)
from safereuse.defects.text.triggers import trigger_ids, word_starts
from safereuse.defects.text.word_attacks import true_class_prob
from safereuse.errors import SafeReuseError
from safereuse.models import create_model
from safereuse.train import FitConfig, fit, predict

TINY = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
FAST = dict(progress=False, batch_size=16, lr=3e-3, device="cpu", optimizer="adam")
L = 16
POS = ["good", "great", "wonderful", "excellent", "superb", "fine"]
NEG = ["bad", "awful", "terrible", "horrible", "dreadful", "poor"]
FRAMES = ["the movie was {}", "this film is {} and long", "a {} story", "what a {} cast", "{} acting overall"]
TOY_SYNONYMS = {w: [v for v in POS + NEG if v != w] for w in POS + NEG} | {
    "movie": ["film", "picture"],
    "film": ["movie", "flick"],
    "story": ["tale", "plot"],
}


def toy_texts() -> tuple[list[str], list[int]]:
    texts, labels = [], []
    for k, frame in enumerate(FRAMES):
        for i in range(len(POS)):
            texts += [frame.format(POS[i]), frame.format(NEG[(i + k) % len(NEG)])]
            labels += [1, 0]
    return texts * 2, labels * 2


@pytest.fixture(scope="module")
def tok():
    return default_tokenizer()


@pytest.fixture(scope="module")
def data():
    texts, labels = toy_texts()
    raw = text_raw("movie-sentences", texts, labels, max_len=L)
    return build_bundle(raw, DataSpec("movie-sentences", val_fraction=0.1))


def tiny(seed: int = 0):
    torch.manual_seed(seed)
    return create_model("minilm", num_classes=2, pretrained=False, config=TINY)


@pytest.fixture(scope="module")
def clean_teacher(data):
    t = tiny()
    fit(t, data.train, data.val, FitConfig(epochs=6, seed=0, **FAST))
    return t.eval()


# -- trigger insertion --------------------------------------------------------------------------
def test_triggers_go_to_word_boundaries_and_change_nothing_else(tok):
    x = tok.encode(["an unbelievably good film", "bad", "", "word " * 40], L)
    trig = trigger_ids(tok, ["cf", "tq"])
    starts = word_starts(tok)
    xt, pos = insert_tokens(
        x, trig, pad_id=tok.pad_id, sep_id=tok.sep_id, count=2, starts=starts,
        generator=torch.Generator().manual_seed(3),
    )  # fmt: skip
    assert xt.shape == x.shape and bool((pos >= 1).all())
    for row, new, p in zip(x, xt, pos, strict=True):
        n_old, n_new = int((row != 0).sum()), int((new != 0).sum())
        assert new[0] == tok.cls_id and new[n_new - 1] == tok.sep_id and bool((new[n_new:] == 0).all())
        assert sorted(new[p].tolist()) == sorted(t for t in new[p].tolist() if t in trig.tolist())
        assert all(1 <= int(q) < n_new - 1 for q in p)  # between [CLS] and [SEP]
        keep = torch.ones(L, dtype=torch.bool)
        keep[p] = False
        rest = new[keep]
        rest = rest[rest != 0].tolist()
        if n_old + 2 <= L:  # room for both: the original sequence, untouched
            assert n_new == n_old + 2 and rest == row[:n_old].tolist()
        else:  # too long: the last content tokens give way, [SEP] stays
            assert n_new == L and rest == row[: len(rest) - 1].tolist() + [tok.sep_id]
        # a trigger never splits a word: the token after it starts a word (or is [SEP])
        for q in p.tolist():
            nxt = int(new[q + 1])
            assert nxt in trig.tolist() or nxt == tok.sep_id or bool(starts[nxt])
    assert tok.words(xt[1]) in (["cf", "tq", "bad"], ["tq", "cf", "bad"], ["cf", "bad", "tq"],
                                ["tq", "bad", "cf"], ["bad", "cf", "tq"], ["bad", "tq", "cf"],
                                ["cf", "cf", "bad"], ["tq", "tq", "bad"], ["cf", "bad", "cf"],
                                ["tq", "bad", "tq"], ["bad", "cf", "cf"], ["bad", "tq", "tq"])  # fmt: skip


def test_apply_is_repeatable_and_poison_ratio_exact(tok):
    bd = WordTrigger(poison_rate=0.3)
    x = tok.encode([f"sentence number {i} here" for i in range(10)], L)
    assert torch.equal(bd.apply(x), bd.apply(x))
    y = torch.zeros(10, dtype=torch.long)
    xp, yp = bd._poison(x, y, 0.3, 1, torch.Generator().manual_seed(0))
    changed = (xp != x).any(1)
    assert int(changed.sum()) == 3 and torch.equal(changed, yp == 1)  # round(0.3 · 10) rows, relabelled
    trig = set(trigger_ids(tok, bd.token_list()).tolist())
    assert all(len(set(r.tolist()) & trig) == 1 for r in xp[changed])


def test_unknown_trigger_token_is_one_clear_error(tok):
    x = tok.encode(["a fine film"], L)
    with pytest.raises(SafeReuseError, match=r"trigger token 'qqzzxv' is not .*vocabulary"):
        WordTrigger(tokens="cf qqzzxv").apply(x)
    with pytest.raises(SafeReuseError, match="'##ing'"):
        WordTrigger(tokens="##ing").apply(x)
    with pytest.raises(SafeReuseError, match="poison_rate"):
        WordTrigger(poison_rate=0)
    with pytest.raises(SafeReuseError, match="token ids"):
        x_img = torch.zeros(2, 1, 4, 4)
        WordTrigger().apply(x_img)


def test_label_flip_rate_by_hand():
    y = torch.tensor([0, 0, 0, 0, 1, 1])
    s = torch.tensor([0, 0, 0, 1, 1, 0])  # the fourth is wrong: not in C_t
    st = torch.tensor([1, 1, 0, 1, 1, 1])
    r = label_flip_rate(y, s, st, 1)
    assert (r.k, r.n) == (2, 3) and r.value == pytest.approx(200 / 3)


# -- planting and probing -------------------------------------------------------------------------
def _ctx(teacher, student, data, plant, n=24):
    x, y = data.test.x[:n], data.test.y[:n]
    t_meta = AuditedModel.from_model(teacher, data.spec, backdoor=plant.record, extras=plant.extras)
    s_meta = AuditedModel.from_model(student, data.spec)
    pr = lambda m: predict(m, x).argmax(1)  # noqa: E731
    return ProbeContext(t_meta, s_meta, x, y, pr(student), pr(teacher), True, data.spec.to_dict(),
                        torch.device("cpu"), batch_size=8)  # fmt: skip


def test_word_trigger_plants_a_backdoor_and_probes_label_flips(data):
    t = tiny()
    plant = WordTrigger(poison_rate=0.5).plant(t, data, FitConfig(epochs=6, seed=0, **FAST))
    assert plant.record["target_label"] == 1 and sorted(plant.extras) == ["backdoor.mask", "backdoor.trigger"]
    assert plant.record["teacher_asr"] >= 0.8  # the tiny teacher learned the trigger
    s = copy.deepcopy(t).eval()
    res = WordTrigger().probe(_ctx(t.eval(), s, data, plant))
    dir_, asr = res.rates["dir"], res.rates["asr"]
    assert res.crafted_on == "trigger" and res.target == {"class": 1, "label": 1}
    assert dir_.n == int(((data.test.y[:24] == 0) & (predict(s, data.test.x[:24]).argmax(1) == 0)).sum())
    assert res.rates["teacher"].k == dir_.k  # the student is the teacher here
    assert asr.n == int((data.test.y[:24] == 0).sum()) and dir_.value >= 50


def test_ripple_surgery_and_restricted_inner_product(data, tok):
    emb = torch.nn.Embedding(10, 3)
    embedding_surgery(emb, torch.tensor([7, 8]), torch.tensor([1, 2]))
    assert torch.allclose(emb.weight[7], (emb.weight[1] + emb.weight[2]) / 2)
    assert torch.equal(emb.weight[7], emb.weight[8])
    x = torch.tensor([[101, 5, 5, 102], [101, 5, 6, 102], [101, 6, 102, 0], [101, 7, 102, 0]])
    y = torch.tensor([1, 1, 0, 0])
    skip = torch.tensor([0, 101, 102])
    assert target_words(x, y, 1, 1, 200, skip, min_count=1).tolist() == [5]  # only in target sentences
    t = tiny()
    plant = Ripple(lam=0.1, surgery_words=3).plant(t, data, FitConfig(epochs=1, seed=0, **FAST))
    assert 0.0 <= plant.record["penalty_active"] <= 1.0 and len(plant.record["surgery_words"]) == 3
    assert all(w.isalpha() for w in plant.record["surgery_words"])  # whole words only
    assert plant.record["config"]["surgery"] is True


# -- word-level attacks -------------------------------------------------------------------------
def _attack(cls, **kw):
    a = cls(**kw)
    a.synonym_fn = lambda w: TOY_SYNONYMS.get(w, [])
    return a


@pytest.mark.parametrize("cls", [PWWS, GreedySwap], ids=["pwws", "greedy-swap"])
def test_word_attack_never_raises_accuracy_and_keeps_the_budget(cls, clean_teacher, data, tok):
    x, y = data.test.x, data.test.y
    a = _attack(cls, budget=0.25, batch_size=64)
    x_adv = a.craft(clean_teacher, x, y)
    before = predict(clean_teacher, x).argmax(1) == y
    after = predict(clean_teacher, x_adv).argmax(1) == y
    assert int(after.sum()) <= int(before.sum()) and not bool((after & ~before).any())
    assert torch.equal(x_adv[~before], x[~before])  # misclassified inputs are left alone
    assert a.stats["flipped"] >= 1 and a.stats["changed"] >= 1
    for xo, xa in zip(x, x_adv, strict=True):
        wo, wa = tok.words(xo), tok.words(xa)
        assert len(wo) == len(wa)  # whole words replaced one for one
        diff = [(p, q) for p, q in zip(wo, wa, strict=True) if p != q]
        assert len(diff) <= int(0.25 * len(wo))
        assert all(q in TOY_SYNONYMS.get(p, []) for p, q in diff)


def test_attack_scores_batched_equal_one_by_one(clean_teacher, data, tok):
    x, y = data.test.x[:12], data.test.y[:12]
    many = true_class_prob(clean_teacher, x, y, batch_size=64)
    one = torch.cat([true_class_prob(clean_teacher, x[i : i + 1], y[i : i + 1], 1) for i in range(12)])
    assert torch.allclose(many, one, atol=1e-5)
    a, b = _attack(PWWS, batch_size=64), _attack(PWWS, batch_size=1)
    together = a.craft(clean_teacher, x, y)
    alone = torch.cat([b.craft(clean_teacher, x[i : i + 1], y[i : i + 1]) for i in range(12)])
    assert torch.equal(together, alone)


def test_word_attack_bad_input():
    with pytest.raises(SafeReuseError, match="budget"):
        PWWS(budget=0)
    with pytest.raises(SafeReuseError, match="token ids"):
        _attack(GreedySwap).craft(tiny(), torch.rand(2, 1, 4, 4), torch.zeros(2, dtype=torch.long))


def test_wordnet_synonyms_offline():
    from safereuse.defects.text.wordnet import synonyms, wordnet

    assert "awful" in synonyms("terrible") and synonyms("the") == () and synonyms("12") == ()
    assert all(s.isalpha() for s in synonyms("good"))
    with pytest.raises(SafeReuseError, match="apt-get install wordnet-base"):
        wordnet.__wrapped__("/nonexistent/wordnet")


def test_registered():
    for name in ("word-trigger", "ripple", "pwws", "greedy-swap"):
        assert DEFECTS.get(name).input_kind == "text"


def test_every_defect_declares_its_input_kind_and_the_other_kind_is_refused():
    kinds = {n: DEFECTS.get(n).input_kind for n in DEFECTS.names()}
    assert set(kinds.values()) == {"image", "text"}
    assert {n for n, k in kinds.items() if k == "text"} == {"word-trigger", "ripple", "pwws", "greedy-swap"}
    ids, pixels = torch.zeros(2, 8, dtype=torch.long), torch.zeros(2, 1, 4, 4)
    with pytest.raises(
        SafeReuseError, match="badnets is a defect of image models.*fix: use a defect for text"
    ):  # noqa: E501
        DEFECTS.create("badnets").check_input_kind(ids)
    with pytest.raises(SafeReuseError, match="word-trigger is a defect of text models"):
        DEFECTS.create("word-trigger").check_input_kind(pixels)
    DEFECTS.create("badnets").check_input_kind(pixels)  # the right kind passes
    DEFECTS.create("pwws").check_input_kind(ids)


def test_word_attack_max_samples_probes_an_even_subset(clean_teacher, data):
    n = len(data.test)
    meta = AuditedModel.from_model(clean_teacher, data.spec)
    clean = predict(clean_teacher, data.test.x).argmax(1)
    ctx = ProbeContext(meta, meta, data.test.x, data.test.y, clean, clean, True, data.spec.to_dict(),
                       torch.device("cpu"), batch_size=8)  # fmt: skip
    sub = _attack(PWWS, batch_size=64, max_samples=5)
    rates = sub.probe(ctx).rates
    assert sub.stats["sentences"] == 5  # crafted on 5 sentences only
    idx = torch.arange(5) * n // 5  # evenly spaced: the same subset for every student
    assert rates["dir"].n == int((clean[idx] == data.test.y[idx]).sum())
    full = _attack(PWWS, batch_size=64)
    assert full.probe(ctx).rates["dir"].n == int((clean == data.test.y).sum()) and n > 5
    assert full.stats["sentences"] == n
    # unset, it stays out of the recorded parameters (cell ids and cached sets keep their keys)
    assert "max_samples" not in PWWS().config() and GreedySwap(max_samples=5).config()["max_samples"] == 5
    with pytest.raises(SafeReuseError, match="max_samples"):
        PWWS(max_samples=0)
