"""``safereuse slice``: NNSlicer's dynamic slice of a saved model (over :func:`safereuse.api.slice_model`).

The group's callback is the plain ``safereuse slice --model M --out F.safetensors`` command; it does
nothing when a subcommand (``slice detect`` / ``prune`` / ``protect``) is invoked instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from . import api
from .artifacts import load_model
from .data import parse_classes
from .errors import SafeReuseError
from .registry import parse_params

slice_app = typer.Typer(
    help="NNSlicer: which neurons and synapses drive a model's decisions (dynamic slicing).",
    invoke_without_command=True,
)


def _criterion(text: str) -> str | int | list[int]:
    """``predicted`` / ``penultimate`` / ``class=K`` / ``neurons=1,3``."""
    if text in ("predicted", "penultimate"):
        return text
    key, _, val = text.partition("=")
    try:
        if key == "class":
            return int(val)
        if key == "neurons":
            return [int(v) for v in val.split(",") if v.strip()]
    except ValueError:
        pass
    raise SafeReuseError(
        f"unknown criterion {text!r}", fix="use predicted, penultimate, class=K or neurons=1,3"
    )


@slice_app.callback()
def slice_cmd(
    ctx: typer.Context,
    model: Path | None = typer.Option(None, "--model", help="trained model artifact directory"),
    out: Path | None = typer.Option(
        None, "--out", help="the .safetensors file to write (summary: .json beside it)"
    ),
    data: str | None = typer.Option(None, "--data", help="dataset (default: the model's own)"),
    classes: str | None = typer.Option(None, "--classes", help="class subset of --data, e.g. 0-4"),
    split: str = typer.Option("test", "--split", help="inputs to slice: train, val or test"),
    criterion: str = typer.Option(
        "predicted", "--criterion", help="predicted, penultimate, class=K (output neuron) or neurons=1,3"
    ),
    theta: float = typer.Option(0.3, "--theta", help="θ in [0, 1): drop each neuron's weakest inputs"),
    reference: str = typer.Option("mean", "--reference", help="mean (Δ from the profiled mean) or zero"),
    limit: int | None = typer.Option(None, "--limit", help="slice only the first N inputs of the split"),
    batch_size: int = typer.Option(256, "--batch-size", help="inputs per batch"),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda, cuda:N"),
    as_json: bool = typer.Option(False, "--json", help="print the summary as JSON"),
    data_dir: str | None = typer.Option(None, "--data-dir", help="folder holding dataset files"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
) -> None:
    """Slice a model: per-neuron / per-synapse contributions to the criterion on a data split."""
    if ctx.invoked_subcommand is not None:
        return
    if model is None or out is None:
        raise SafeReuseError(
            "slice needs --model and --out", fix="e.g. safereuse slice --model M --out s.safetensors"
        )
    crit = _criterion(criterion)
    art = load_model(model)
    spec = api.model_data_spec(art, data, classes, data_dir)  # the model's own slice unless --data
    res = api.slice_model(
        art,
        out=out,
        data=spec,
        split=split,
        criterion=crit,
        theta=theta,
        reference=reference,
        limit=limit,
        batch_size=batch_size,
        device=device,
        progress=not quiet,  # bars go to stderr, so --json keeps stdout clean
    )
    if as_json:
        typer.echo(json.dumps(res, indent=2))
        return
    typer.echo(
        f"sliced {res['count']} {split} inputs (criterion {res['criterion']}, θ={res['theta']}): "
        f"{res['neurons_in_slice']:,}/{res['neurons']:,} neurons ({100 * res['fraction_neurons']:.1f}%), "
        f"{res['synapses_in_slice']:,}/{res['synapses']:,} synapses ({100 * res['fraction_synapses']:.1f}%)"
    )
    for name, v in res["layers"].items():
        typer.echo(
            f"  {name}: {v['neurons_in_slice']}/{v['neurons']} neurons, "
            f"{v['synapses_in_slice']}/{v['synapses']} synapses"
        )
    typer.echo(f"saved {res['out']}")


# -- NNSlicer's applications (safereuse.api.slice over safereuse.applications) ------------------------
def _classes(text: str | None) -> list[int] | None:
    return parse_classes(text) if text else None


def _data(art_path: Path, data: str | None, data_dir: str | None):
    """The model's own data slice, or ``--data`` (all its classes) when given."""
    art = load_model(art_path)
    return art, api.model_data_spec(art, data, None, data_dir)


def _pct(v: object) -> str:
    return "-" if v is None else f"{100 * float(v):.1f}%"  # type: ignore[arg-type]


@slice_app.command("detect")
def detect_cmd(
    model: Path = typer.Option(..., "--model", help="trained model artifact directory"),
    attack: list[str] = typer.Option(
        ..., "--attack", help="attack name (repeatable; `paper` = the paper's list), e.g. fgsm, pgd, jsma"
    ),
    data: str | None = typer.Option(None, "--data", help="dataset (default: the model's own)"),
    param: list[str] | None = typer.Option(None, "--param", "-p", help="attack parameter key=value"),
    detector: list[str] | None = typer.Option(
        None,
        "--detector",
        help="safereuse list detectors (repeatable); default: slice-knn, nnslicer (the paper's), featuremap, "
        "effectivepath, mahalanobis",
    ),
    detector_param: list[str] | None = typer.Option(
        None, "--detector-param", help="detector parameter key=value (fpr, k, theta, max_depth...)"
    ),
    n_train: int = typer.Option(10000, "--n-train", help="benign training inputs the detectors learn"),
    n_test: int = typer.Option(500, "--n-test", help="benign test inputs (and adversarial sources)"),
    save: Path | None = typer.Option(None, "--save", help="directory to save the fitted detectors in"),
    seed: int = typer.Option(0, "--seed", help="attack / bootstrap seed"),
    as_json: bool = typer.Option(False, "--json", help="print one entry per detector and attack as JSON"),
    data_dir: str | None = typer.Option(None, "--data-dir", help="folder holding dataset files"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
) -> None:
    """Adversarial-input detection: the slice k-NN detector vs NNSlicer's, FeatureMap, EffectivePath and
    Mahalanobis."""
    art, spec = _data(model, data, data_dir)
    res = api.detect(
        art, attack, params=parse_params(param), detectors=detector or None,
        detector_params=parse_params(detector_param), data=spec, n_train=n_train, n_test=n_test,
        save=save, seed=seed, progress=not quiet,
    )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(res, indent=2))
        return
    for dn, info in res["detectors"].items():
        typer.echo(
            f"{dn}: trained on {info['trained_on']} ({info['n_train']}), fitted in "
            f"{info['seconds_fit']:.1f} s, {info['seconds_per_test_input'] * 1000:.1f} ms per test input; "
            f"benign flag rate "
            f"{_pct(res['benign'][dn])}"
        )
    for row in res["attacks"]:
        typer.echo(f"{row['attack']}: {row['n_success']}/{row['n_sources']} successful adversarial inputs")
        for dn, m in row["detectors"].items():
            auc = "-" if m["auc"] is None else f"{m['auc']:.3f}"
            f1 = "-" if m["f1"] is None else f"{m['f1']:.3f}"
            typer.echo(
                f"  {dn}: recall {m['recall']['value']:.1f}% ({m['tp']}/{m['n_adversarial']}), precision "
                f"{m['precision']['value']:.1f}% ({m['tp']}/{m['tp'] + m['fp']}), F1 {f1}, AUC {auc}"
            )
    if save is not None:
        typer.echo(f"saved detectors in {save}")


@slice_app.command("prune")
def prune_cmd(
    model: Path = typer.Option(..., "--model", help="trained model artifact directory"),
    target_classes: str = typer.Option(..., "--target-classes", help="dataset class ids, e.g. 2,5,7"),
    ratio: float = typer.Option(..., "--ratio", help="share of each layer's synapses pruned, in (0, 1)"),
    out: Path = typer.Option(..., "--out", help="artifact directory to create"),
    data: str | None = typer.Option(None, "--data", help="dataset (default: the model's own)"),
    criterion: str = typer.Option("nnslicer", "--criterion", help="nnslicer, weight, channel, effectivepath"),
    finetune_epochs: int = typer.Option(0, "--finetune-epochs", help="fine-tune on the target classes"),
    param: list[str] | None = typer.Option(None, "--param", "-p", help="pruning parameter key=value"),
    as_json: bool = typer.Option(False, "--json", help="print the metrics as JSON"),
    data_dir: str | None = typer.Option(None, "--data-dir", help="folder holding dataset files"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
) -> None:
    """Class-specific pruning: prune the synapses the target classes do not need."""
    art, spec = _data(model, data, data_dir)
    params = {**parse_params(param), "finetune_epochs": finetune_epochs}
    res = api.prune_model(art, _classes(target_classes) or [], out=out, ratio=ratio, criterion=criterion,
                          params=params, data=spec, progress=not quiet)  # fmt: skip
    if as_json:
        typer.echo(json.dumps(res, indent=2))
        return
    line = (
        f"{criterion} r={ratio}: target classes {res['target_classes']} acc {_pct(res['acc_before'])} -> "
        f"{_pct(res['acc_pruned'])} (n={res['n']})"
    )
    if "acc_finetuned" in res:
        line += f", fine-tuned {_pct(res['acc_finetuned'])}"
    typer.echo(line + f"; parameters {res['params_before']:,} -> {res['params_after']:,}")
    typer.echo(f"saved {res['out']}")


@slice_app.command("protect")
def protect_cmd(
    model: Path = typer.Option(..., "--model", help="trained model artifact directory"),
    out: Path = typer.Option(..., "--out", help="artifact directory for the shipped (hidden) model"),
    hide: float = typer.Option(0.5, "--hide", help="share of each layer's synapses hidden, in (0, 1)"),
    target_classes: str | None = typer.Option(
        None, "--target-classes", help="dataset class ids (default: all)"
    ),
    data: str | None = typer.Option(None, "--data", help="dataset (default: the model's own)"),
    criterion: str = typer.Option("nnslicer", "--criterion", help="nnslicer, weight, random, effectivepath"),
    param: list[str] | None = typer.Option(None, "--param", "-p", help="protection parameter key=value"),
    as_json: bool = typer.Option(False, "--json", help="print the metrics as JSON"),
    data_dir: str | None = typer.Option(None, "--data-dir", help="folder holding dataset files"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress bars"),
) -> None:
    """Model protection: hide the top-contribution synapses, then measure what an attacker recovers."""
    art, spec = _data(model, data, data_dir)
    res = api.protect_model(
        art, _classes(target_classes), out=out, hide=hide, criterion=criterion,
        params=parse_params(param), data=spec, progress=not quiet,
    )  # fmt: skip
    if as_json:
        typer.echo(json.dumps(res, indent=2))
        return
    typer.echo(
        f"{criterion} hide={hide}: target acc {_pct(res['acc_target_original'])} -> shipped "
        f"{_pct(res['acc_target_shipped'])} -> recovered {_pct(res['acc_target_recovered'])} "
        f"(n={res['n_target']}); all classes {_pct(res['acc_all_original'])} -> "
        f"{_pct(res['acc_all_shipped'])} -> {_pct(res['acc_all_recovered'])} (n={res['n_all']})"
    )
    typer.echo(f"saved {res['out']}")
