"""The ``max_len`` data option (text data only): DataSpec / load_data, runner specs, CLI; recipe keys."""

from __future__ import annotations

import pytest
import torch

from cli_helpers import assert_one_line_error, run_cli
from safereuse.data import DataSpec, check_max_len, load_data, load_raw
from safereuse.data.text import MAX_LEN, default_tokenizer, last_stats
from safereuse.errors import SafeReuseError
from safereuse.runner import expand, load_spec
from safereuse.runner.spec import TeacherCfg, teacher_key, teacher_recipe

# 5 positive sentences of 6 words (8 tokens with [CLS] and [SEP]), 5 negative of 1 word (3 tokens)
ROWS = "id\tsentiment\ttext\n" + "".join(
    f"{i}\t2.0\tgood good good good good good\n{i + 5}\t-2.0\tbad\n" for i in range(1, 6)
)


@pytest.fixture
def tweets_dir(tmp_path):
    (tmp_path / "tweets_GroundTruth.txt").write_text(ROWS)
    return str(tmp_path)


def test_max_len_sets_the_length_and_truncation_is_counted(tweets_dir) -> None:
    tok = default_tokenizer()
    short = load_data(DataSpec("tweets", data_dir=tweets_dir, max_len=6, val_fraction=0.0))
    x = torch.cat([short.train.x, short.test.x])
    assert x.shape == (10, 6)
    # the five 8-token sentences are cut to [CLS] good×4 [SEP]: counted, not an error
    assert last_stats("tweets") == {
        "max_len": 6, "truncated": 5, "rows": 10, "kept": 10, "dropped_neutral": 0,
    }  # fmt: skip
    assert "5 truncated at 6 tokens" in load_raw("tweets", tweets_dir, 6).source
    long_rows = x[(x == tok.token_to_id("good")).any(1)]
    assert len(long_rows) == 5 and (long_rows[:, -1] == tok.sep_id).all()
    assert (long_rows == tok.token_to_id("good")).sum(1).tolist() == [4] * 5
    exact = load_raw("tweets", tweets_dir, 8)  # exactly fits: nothing truncated
    assert exact.train_x.shape[1] == 8 and last_stats("tweets")["truncated"] == 0
    default = load_raw("tweets", tweets_dir)
    assert default.train_x.shape[1] == MAX_LEN
    assert load_raw("tweets", tweets_dir, 6) is load_raw("tweets", tweets_dir, 6)  # cached per max_len
    # the same sentences in the same splits, only the length differs
    assert torch.equal(exact.train_y, default.train_y)
    assert torch.equal(exact.train_x, default.train_x[:, :8])


@pytest.mark.parametrize("bad", [1, 0, 513, True, 3.5, "32"])
def test_bad_max_len_is_one_line(bad) -> None:
    with pytest.raises(SafeReuseError, match="must be an integer from 2 to 512") as exc:
        check_max_len("movie-sentences", bad)
    assert "\n" not in str(exc.value)


def test_max_len_on_images_is_refused() -> None:
    with pytest.raises(SafeReuseError, match="max_len applies to text data, but digits holds images"):
        load_data("digits", max_len=32)
    with pytest.raises(SafeReuseError, match="holds images"):
        check_max_len("imagefolder:/tmp/x", 32)
    assert check_max_len("digits", None) is None


def test_data_spec_dict_and_teacher_key_only_change_when_set() -> None:
    assert "max_len" not in DataSpec("movie-sentences").to_dict()
    assert DataSpec("movie-sentences", max_len=32).to_dict()["max_len"] == 32
    plain = TeacherCfg(arch="minilm", data="movie-sentences", train_size=100)
    cut = TeacherCfg(arch="minilm", data="movie-sentences", train_size=100, max_len=32)
    r0, r1 = teacher_recipe(plain, 0), teacher_recipe(cut, 0)
    assert "max_len" not in r0["data"] and r1["data"]["max_len"] == 32
    assert teacher_key(r0) != teacher_key(r1)
    # an image teacher's key is the one it had before max_len existed (recorded from the old code)
    img = teacher_recipe(TeacherCfg(arch="resnet8", data="digits", classes=[0, 1], seed=0), 0)
    assert "max_len" not in img["data"]
    assert teacher_key(img) == IMAGE_TEACHER_KEY


IMAGE_TEACHER_KEY = "8bb6c97b0dc64766"  # teacher_key at commit c2177f6, before max_len

SPEC = """
scenarios:
  - name: s
    teacher: {{arch: minilm, data: movie-sentences, train_size: 50{teacher}}}
    student: {{data: {student}, train_size: 20{smax}}}
methods: [{{name: finetune}}]
defects: [{{name: pwws}}]
"""


def test_spec_max_len_reaches_the_cells() -> None:
    text = SPEC.format(teacher=", max_len: 32", student="tweets", smax=", max_len: 24")
    cells = expand(load_spec(text=text))
    cfg = cells[0].config
    assert cfg["teacher"]["data"]["max_len"] == 32 and cfg["student"]["data"]["max_len"] == 24
    plain = expand(load_spec(text=SPEC.format(teacher="", student="tweets", smax="")))[0].config
    assert "max_len" not in plain["teacher"]["data"] and "max_len" not in plain["student"]["data"]


def test_spec_max_len_errors_name_the_key_and_line() -> None:
    with pytest.raises(SafeReuseError) as exc:
        load_spec(text=SPEC.format(teacher="", student="digits", smax=", max_len: 24"))
    assert "line 5: scenarios[0].student.max_len: max_len applies to text data" in str(exc.value)
    with pytest.raises(SafeReuseError) as exc:
        load_spec(text=SPEC.format(teacher=", max_len: 1", student="tweets", smax=""))
    assert "line 4: scenarios[0].teacher.max_len: max_len 1 must be an integer" in str(exc.value)


def test_cli_max_len_on_images_is_one_line(capsys, tmp_path) -> None:
    code, _, err = run_cli(
        capsys, "teacher", "train", "--arch", "smallcnn", "--data", "digits", "--max-len", "32",
        "--out", str(tmp_path / "t"),
    )  # fmt: skip
    assert_one_line_error(code, err, "max_len applies to text data, but digits holds images")
    assert not (tmp_path / "t").exists()


def test_model_refuses_more_tokens_than_positions() -> None:
    from safereuse.models.minilm import MiniLM

    cfg = {"hidden_size": 8, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 16,
           "vocab_size": 20, "max_position_embeddings": 6}  # fmt: skip
    m = MiniLM(2, config=cfg).eval()
    assert m(torch.tensor([[1, 5, 5, 5, 5, 2, 0, 0]])).shape == (1, 2)  # padding past 6: trimmed, fine
    with pytest.raises(SafeReuseError, match="token ids are 8 long but the model has 6 positions"):
        m(torch.tensor([[1, 5, 5, 5, 5, 5, 5, 2]]))
