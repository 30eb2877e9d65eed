"""Shared fixtures: tiny real data (scikit-learn digits) and tiny saved teacher/student artifacts."""

from __future__ import annotations

import functools
import http.server
import threading
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def digits_teacher_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smallcnn teacher trained for 2 epochs on digits 0-4 (a few seconds)."""
    from safereuse import api
    from safereuse.data import DataSpec

    out = tmp_path_factory.mktemp("teacher") / "t"
    api.train_teacher(
        "smallcnn",
        DataSpec("digits", classes=[0, 1, 2, 3, 4]),
        out=out,
        fit_params={"epochs": 2, "lr": 0.05},
        seed=0,
        progress=False,
    )
    return out


@pytest.fixture(scope="module")
def teacher(digits_teacher_dir: Path):
    """The digits teacher, loaded (a module's tests share it; a module may define its own)."""
    from safereuse.artifacts import load_model

    return load_model(digits_teacher_dir).model


@pytest.fixture(scope="module")
def bundle():
    """Digits 0-4, the data the digits teacher was trained on."""
    from safereuse.data import DataSpec, load_data

    return load_data(DataSpec("digits", classes=[0, 1, 2, 3, 4]))


@pytest.fixture(scope="session")
def digits_student_dir(digits_teacher_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finetuned student of ``digits_teacher_dir`` on digits 5-9 (10 images per class)."""
    from safereuse import api
    from safereuse.data import DataSpec

    out = tmp_path_factory.mktemp("student") / "s"
    api.transfer(
        digits_teacher_dir,
        DataSpec("digits", classes=[5, 6, 7, 8, 9], train_size=10, per_class=True),
        "finetune",
        {"epochs": 2},
        out=out,
        seed=0,
        progress=False,
    )
    return out


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory: pytest.TempPathFactory):
    """Tests never write into the user's cache (crafted-defect cache, downloads)."""
    import os

    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp_path_factory.mktemp("xdg-cache"))
    yield
    if old is None:
        os.environ.pop("XDG_CACHE_HOME", None)
    else:
        os.environ["XDG_CACHE_HOME"] = old


# --------------------------------------------------------------------------------------------------
# assert_no_trace: the one "leaves no trace" check every test uses
# --------------------------------------------------------------------------------------------------

_MODULE_HOOK_DICTS = (
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)
_TENSOR_HOOK_DICTS = ("_backward_hooks", "_post_accumulate_grad_hooks")


def _hook_keys(obj: object, names: tuple[str, ...]) -> dict[str, tuple]:
    return {n: tuple((getattr(obj, n, None) or {}).keys()) for n in names}


def _global_hooks() -> dict[str, tuple]:
    import torch.nn.modules.module as mm

    names = [n for n in dir(mm) if n.startswith("_global") and n.endswith("hooks")]
    return {n: tuple(getattr(mm, n).keys()) for n in names}


def _global_flags() -> dict[str, bool]:
    return {
        "torch.is_grad_enabled()": torch.is_grad_enabled(),
        "torch.is_inference_mode_enabled()": torch.is_inference_mode_enabled(),
        "torch.backends.mha.get_fastpath_enabled()": torch.backends.mha.get_fastpath_enabled(),
    }


class NoTrace:
    """A snapshot of everything a model-touching call must leave as it found it.

    Taken at construction; :meth:`check` (or leaving the ``with`` block without an exception)
    compares the model(s) against it and fails with one message listing every difference:

    - hooks of every kind on every submodule (forward / forward-pre, with and without kwargs,
      always-called, backward / backward-pre, state-dict and load-state-dict hooks), tensor hooks on
      every parameter (``register_hook``, post-accumulate-grad), and torch's global module hooks;
    - parametrizations (``torch.nn.utils.parametrize.is_parametrized`` per module) and the names of
      modules, parameters and buffers (a leftover ``prune`` / parametrization renames them);
    - every parameter's ``requires_grad`` and ``.grad`` (``None`` stays ``None``, a tensor stays
      bit-identical), every module's ``training`` flag;
    - global switches: grad mode, inference mode, the MHA fast path;
    - with ``state=True``: the state_dict bit-identical (parameters *and* buffers such as BN running
      statistics).

    The snapshot is of the *current* state, so a test sets up the mixed state it wants restored
    (``model.train(); model.bn1.eval(); p.requires_grad_(False)``) before taking it.

    Example::

        def test_craft_leaves_no_trace(assert_no_trace, model, x, y):
            with assert_no_trace(model, state=True):
                defect.craft(model, x, y)

            trace = assert_no_trace(teacher, student)  # several models at once
            method.prepare(teacher, data)
            trace.check()
    """

    def __init__(self, *models: torch.nn.Module, state: bool = False) -> None:
        if not models:
            raise TypeError("assert_no_trace needs at least one model")
        self.models = models
        self.state = state
        self._snaps = [self._snapshot(m, with_state=state) for m in models]
        self._globals = (_global_hooks(), _global_flags())

    @staticmethod
    def _snapshot(model: torch.nn.Module, *, with_state: bool) -> dict:
        from torch.nn.utils import parametrize

        params = dict(model.named_parameters(remove_duplicate=False))
        return {
            "modules": {n: _hook_keys(m, _MODULE_HOOK_DICTS) for n, m in model.named_modules()},
            "training": {n: m.training for n, m in model.named_modules()},
            "parametrized": {n: parametrize.is_parametrized(m) for n, m in model.named_modules()},
            "params": sorted(params),
            "buffers": sorted(n for n, _ in model.named_buffers(remove_duplicate=False)),
            "requires_grad": {n: p.requires_grad for n, p in params.items()},
            "tensor_hooks": {n: _hook_keys(p, _TENSOR_HOOK_DICTS) for n, p in params.items()},
            "grad": {n: None if p.grad is None else p.grad.detach().clone() for n, p in params.items()},
            "state": (
                {k: v.detach().clone() for k, v in model.state_dict(keep_vars=True).items()}
                if with_state
                else None
            ),
        }

    @staticmethod
    def hooks(model: torch.nn.Module) -> list[str]:
        """Every hook and parametrization ``model`` carries now (for a freshly built model, which has
        no "before" to compare with): ``assert not assert_no_trace.hooks(student)``."""
        from torch.nn.utils import parametrize

        out = [f"global {k}" for k, v in _global_hooks().items() if v]
        for name, m in model.named_modules():
            out += [f"{name or '<root>'}.{k}" for k, v in _hook_keys(m, _MODULE_HOOK_DICTS).items() if v]
            if parametrize.is_parametrized(m):
                out.append(f"{name or '<root>'} is parametrized")
        for name, p in model.named_parameters():
            out += [f"{name}.{k}" for k, v in _hook_keys(p, _TENSOR_HOOK_DICTS).items() if v]
        return out

    def problems(self) -> list[str]:
        """Every difference from the snapshot, as readable lines (empty when nothing changed)."""
        out: list[str] = []
        hooks, flags = self._globals
        now_hooks = _global_hooks()
        out += [f"global {k} changed: {v} -> {now_hooks[k]}" for k, v in hooks.items() if now_hooks[k] != v]
        now_flags = _global_flags()
        out += [f"{k} changed: {v} -> {now_flags[k]}" for k, v in flags.items() if now_flags[k] != v]
        for i, (model, before) in enumerate(zip(self.models, self._snaps, strict=True)):
            tag = f"model {i}: " if len(self.models) > 1 else ""
            now = self._snapshot(model, with_state=False)  # the state is compared below, without a copy
            for key in ("params", "buffers"):
                if now[key] != before[key]:
                    gone, new = set(before[key]) - set(now[key]), set(now[key]) - set(before[key])
                    out.append(f"{tag}{key} renamed: removed {sorted(gone)}, added {sorted(new)}")
            for key, what in (
                ("modules", "hooks"),
                ("training", "training flag"),
                ("parametrized", "parametrization"),
                ("requires_grad", "requires_grad"),
                ("tensor_hooks", "tensor hooks"),
            ):
                for name, old in before[key].items():
                    if name in now[key] and now[key][name] != old:
                        out.append(f"{tag}{what} of {name or '<root>'!r} changed: {old} -> {now[key][name]}")
            for name, old in before["grad"].items():
                new = now["grad"].get(name)
                if (old is None) != (new is None) or (
                    old is not None and not (old.shape == new.shape and torch.equal(old, new))
                ):
                    was = "None" if old is None else "a tensor"
                    out.append(f"{tag}.grad of {name!r} changed (was {was})")
            if before["state"] is not None:
                sd = model.state_dict()
                for k, v in before["state"].items():
                    if k not in sd or sd[k].dtype != v.dtype or not torch.equal(sd[k].detach(), v):
                        out.append(f"{tag}state_dict entry {k!r} changed")
        return out

    def check(self) -> None:
        """Fail (AssertionError listing every difference) unless the models are as snapshotted."""
        problems = self.problems()
        assert not problems, "left a trace:\n  " + "\n  ".join(problems)

    def __enter__(self) -> NoTrace:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.check()


@pytest.fixture
def assert_no_trace():
    """Snapshot model(s) now, check later that nothing was left behind (see :class:`NoTrace`).

    ``assert_no_trace(*models, state=False)`` returns a :class:`NoTrace`; use it as a context manager
    (checked on a clean exit) or call ``.check()`` yourself. ``state=True`` also demands a
    bit-identical state_dict. For a model built inside the test (nothing to compare with),
    ``assert not assert_no_trace.hooks(model)`` checks it carries no hook or parametrization at all.
    """
    return NoTrace


# -- a local download server (tests of the download code; nothing leaves 127.0.0.1) ------------------
class QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests: list[str]

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def server(tmp_path):
    """A local HTTP server on 127.0.0.1 serving ``tmp_path/served``; yields (base_url, folder, log)."""
    served = tmp_path / "served"
    served.mkdir()
    log: list[str] = []
    handler = type("H", (QuietHandler,), {"requests": log})
    httpd = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(handler, directory=str(served))
    )
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", served, log
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op thread for a module (transformer tests: 2 threads on 2 shared cores only add
    contention); the thread count comes back after the module."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
