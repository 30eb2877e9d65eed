"""``safereuse slice``: NNSlicer's dynamic slice of a saved model (over :func:`safereuse.api.slice_model`).

The group's callback is the plain ``safereuse slice --model M --out F.safetensors`` command; it does
nothing when a subcommand (``slice detect`` / ``prune`` / ``protect``) is invoked instead.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from .errors import SafeReuseError

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
    from . import api
    from .artifacts import load_model
    from .data import DataSpec, parse_classes

    crit = _criterion(criterion)
    art = load_model(model)
    base = dict(art.manifest.get("data") or {})  # the model's own data slice unless --data names another
    name = data or base.get("name")
    if not name:
        raise SafeReuseError(f"{art.path} records no dataset", fix="pass --data")
    spec = DataSpec(**base) if name == base.get("name") else DataSpec(name)
    if classes is not None:
        spec.classes = parse_classes(classes)
    spec.data_dir = data_dir
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
        progress=not quiet and not as_json,
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
