"""The ``safereuse`` command line: thin over :mod:`safereuse.api`; parse, call, print."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import typer

from .errors import SafeReuseError

app = typer.Typer(
    help="Reuse pretrained neural networks safely: audit and reduce defect inheritance.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
teacher_app = typer.Typer(
    help="Train teacher models (optionally with a planted backdoor).", no_args_is_help=True
)
app.add_typer(teacher_app, name="teacher")

DataOpt = typer.Option(..., "--data", help="dataset: fashion-mnist, digits or imagefolder:PATH")
ClassesOpt = typer.Option(None, "--classes", help="class subset, e.g. 0-4 or 1,3,5 (relabelled 0..k-1)")
TrainSizeOpt = typer.Option(None, "--train-size", help="limit on training images (stratified)")
PerClassOpt = typer.Option(False, "--per-class", help="read --train-size as images per class")
ParamOpt = typer.Option(None, "--param", "-p", help="key=value hyper-parameter (repeatable)")
SeedOpt = typer.Option(0, "--seed", help="random seed")
DeviceOpt = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda, cuda:N")
DataDirOpt = typer.Option(None, "--data-dir", help="folder holding dataset files (searched first)")
QuietOpt = typer.Option(False, "--quiet", "-q", help="no progress bars")


def _spec(
    data: str, classes: str | None, train_size: int | None, per_class: bool, seed: int, data_dir: str | None
):
    from .data import DataSpec, parse_classes

    return DataSpec(
        data,
        classes=parse_classes(classes),
        train_size=train_size,
        per_class=per_class,
        seed=seed,
        data_dir=data_dir,
    )


def _pct(v: Any) -> str:
    return "-" if v is None else f"{100 * float(v):.2f}%"


@teacher_app.command("train")
def teacher_train(
    out: Path = typer.Option(..., "--out", help="artifact directory to create"),
    arch: str = typer.Option("resnet8", "--arch", help="architecture (safereuse list models)"),
    data: str = typer.Option(
        "fashion-mnist", "--data", help="dataset: fashion-mnist, digits or imagefolder:PATH"
    ),
    classes: str | None = ClassesOpt,
    train_size: int | None = TrainSizeOpt,
    per_class: bool = PerClassOpt,
    epochs: int | None = typer.Option(None, "--epochs", help="training epochs (default 6)"),
    backdoor: str | None = typer.Option(None, "--backdoor", help="plant a backdoor (safereuse list defects)"),
    param: list[str] | None = ParamOpt,
    seed: int = SeedOpt,
    device: str = DeviceOpt,
    data_dir: str | None = DataDirOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Train a teacher; --param sets training (lr=...), architecture (width=...) or backdoor options."""
    from dataclasses import fields

    from . import api
    from .models import MODELS
    from .registry import parse_params
    from .train import FitConfig

    params = parse_params(param)
    fit_keys = {f.name for f in fields(FitConfig)} - {"seed", "device", "progress"}
    fit_params = {k: v for k, v in params.items() if k in fit_keys}
    if epochs is not None:
        fit_params["epochs"] = epochs
    rest = {k: v for k, v in params.items() if k not in fit_keys}
    import inspect

    arch_sig = inspect.signature(MODELS.get(arch)).parameters
    arch_kwargs = {k: v for k, v in rest.items() if k in arch_sig}
    bd_params = {k: v for k, v in rest.items() if k not in arch_sig}
    if bd_params and not backdoor:
        raise SafeReuseError(
            f"unknown --param {sorted(bd_params)[0]!r} for teacher training",
            fix="see `safereuse teacher train --help`",
        )
    spec = _spec(data, classes, train_size, per_class, seed, data_dir)
    m = api.train_teacher(
        arch, spec, out=out, arch_kwargs=arch_kwargs, fit_params=fit_params, backdoor=backdoor,
        backdoor_params=bd_params, seed=seed, device=device, progress=not quiet,
    )  # fmt: skip
    met = m["metrics"]
    line = f"teacher {arch} on {data} {spec.classes or 'all classes'}: test acc {_pct(met['test_acc'])} (n={met['n_test']})"
    if m.get("backdoor"):
        line += f", backdoor {backdoor} ASR {_pct(m['backdoor'].get('teacher_asr'))}"
    typer.echo(line)
    typer.echo(f"saved {out}")


@app.command("transfer")
def transfer_cmd(
    teacher: Path = typer.Option(..., "--teacher", help="teacher artifact directory"),
    data: str = DataOpt,
    method: str = typer.Option("finetune", "--method", help="transfer method (safereuse list methods)"),
    out: Path = typer.Option(..., "--out", help="artifact directory to create"),
    classes: str | None = ClassesOpt,
    train_size: int | None = TrainSizeOpt,
    per_class: bool = PerClassOpt,
    param: list[str] | None = ParamOpt,
    seed: int = SeedOpt,
    device: str = DeviceOpt,
    data_dir: str | None = DataDirOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Produce a student from a teacher with a transfer method."""
    from . import api
    from .registry import parse_params

    spec = _spec(data, classes, train_size, per_class, seed, data_dir)
    m = api.transfer(
        teacher, spec, method, parse_params(param), out=out, seed=seed, device=device, progress=not quiet
    )
    met = m["metrics"]
    typer.echo(
        f"student ({method}) on {data} {spec.classes or 'all classes'}: test acc {_pct(met['test_acc'])} (n={met['n_test']})"
    )
    typer.echo(f"saved {out}")


@app.command("evaluate")
def evaluate_cmd(
    model: Path = typer.Option(..., "--model", help="model artifact directory"),
    data: str | None = typer.Option(None, "--data", help="dataset (default: the model's own)"),
    classes: str | None = ClassesOpt,
    as_json: bool = typer.Option(False, "--json", help="print JSON: acc, n, correct, ci, data"),
    data_dir: str | None = DataDirOpt,
) -> None:
    """Clean test accuracy of a model (with a 95 % Wilson interval)."""
    from . import api
    from .artifacts import load_model

    art = load_model(model)
    spec = None
    if data is not None or classes is not None:
        base = dict(art.manifest.get("data") or {})
        name = data or base.get("name")
        if not name:
            raise SafeReuseError(f"{model} records no dataset", fix="pass --data")
        same = name == base.get("name")
        spec = _spec(name, classes, base.get("train_size") if same else None, base.get("per_class", False) if same else False,
                     base.get("seed", 0) if same else 0, data_dir)  # fmt: skip
        if classes is None and same:
            spec.classes = base.get("classes")
    res = api.evaluate(art, spec)
    if as_json:
        typer.echo(json.dumps(res, indent=2))
    else:
        lo, hi = res["ci"]
        typer.echo(f"acc {_pct(res['acc'])} [{_pct(lo)}, {_pct(hi)}] on n={res['n']} test images")


@app.command("list")
def list_cmd(what: str = typer.Argument(..., help="models, datasets, methods or defects")) -> None:
    """List the registered models, datasets, methods or defects."""
    from .registry import Registry

    reg: Registry[Any]
    if what == "models":
        from .models import MODELS as reg
    elif what == "datasets":
        from .data import DATASETS as reg
    elif what == "methods":
        from .methods import METHODS as reg
    elif what == "defects":
        from .defects import DEFECTS as reg
    else:
        raise SafeReuseError(f"cannot list {what!r}", fix="use models, datasets, methods or defects")
    width = max((len(e.name) for e in reg), default=0)
    for e in reg:
        typer.echo(f"{e.name:<{width}}  {e.summary}")
    if what == "datasets":
        typer.echo(f"{'imagefolder:PATH':<{width}}  your own images, one sub-folder per class")


@app.command("demo")
def demo_cmd(
    out: Path = typer.Option(Path("runs/demo"), "--out", help="where the teacher and student are written"),
    quick: bool = typer.Option(False, "--quick", help="tiny, fast version (for CI)"),
    device: str = DeviceOpt,
    data_dir: str | None = DataDirOpt,
    quiet: bool = QuietOpt,
) -> None:
    """The default job: train the default teacher and fine-tune a student on held-back classes."""
    from . import api
    from .data import DataSpec

    teacher_dir, student_dir = out / "teacher", out / "student-finetune"
    fit = {"epochs": 1} if quick else {}
    tspec = DataSpec(
        "fashion-mnist", classes=[0, 1, 2, 3, 4], train_size=3000 if quick else None, data_dir=data_dir
    )
    if not (teacher_dir / "manifest.json").is_file():
        api.train_teacher(
            "resnet8", tspec, out=teacher_dir, fit_params=fit, device=device, progress=not quiet
        )
    t = api.evaluate(teacher_dir)
    typer.echo(f"teacher resnet8 on fashion-mnist classes 0-4: test acc {_pct(t['acc'])} (n={t['n']})")
    sspec = DataSpec(
        "fashion-mnist", classes=[5, 6, 7, 8, 9], train_size=20, per_class=True, data_dir=data_dir
    )
    if not (student_dir / "manifest.json").is_file():
        api.transfer(teacher_dir, sspec, "finetune", {"epochs": 2 if quick else 20}, out=student_dir,
                     device=device, progress=not quiet)  # fmt: skip
    s = api.evaluate(student_dir)
    typer.echo(
        f"student (finetune, 20 images/class) on fashion-mnist classes 5-9: test acc {_pct(s['acc'])} (n={s['n']})"
    )
    typer.echo(f"artifacts in {out}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: one-line errors, no tracebacks, non-zero exit codes.

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code (0 on success, 2 for a user error, 130 when interrupted, 1 for a bug).
    """
    try:
        app(args=argv, prog_name="safereuse")
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except SafeReuseError as exc:
        typer.echo(f"error: {exc.one_line()}", err=True)
        return 2
    except KeyboardInterrupt:
        typer.echo("interrupted: run the same command again to resume", err=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug must still not dump a traceback on users
        if os.environ.get("SAFEREUSE_DEBUG"):
            raise
        typer.echo(
            f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]} "
            "(fix: rerun with SAFEREUSE_DEBUG=1 and report the traceback)",
            err=True,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
