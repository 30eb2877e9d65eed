"""Executors: where tasks run. In-process (``--jobs 1``), a local process pool, or Ray.

All three have the same small interface used by the driver's scheduling loop: ``capacity`` (how many
tasks to keep in flight), ``submit(task, payload) -> handle`` (``task`` is ``teacher`` or ``cell``) and
``wait() -> [(handle, result)]`` (blocks until at least one finishes). A task that dies outside the
task function (a killed worker, a lost Ray node) comes back as a failed result, never as an exception
of the driver.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import socket
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor
from concurrent.futures import wait as cf_wait
from typing import Any

import torch

from ..errors import SafeReuseError
from .worker import run_task

Result = dict[str, Any]


def _lost(exc: BaseException) -> Result:
    return {
        "status": "failed",
        "error": f"worker lost: {type(exc).__name__}: {' '.join(str(exc).split())}"[:1000],
    }


class Executor:
    """Base class: see the module docstring."""

    capacity: int = 1
    name: str = "local"
    threads: int | None = None

    def submit(self, task: str, payload: dict[str, Any]) -> Any:  # pragma: no cover - interface
        raise NotImplementedError

    def wait(self) -> list[tuple[Any, Result]]:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self, cancel: bool = False) -> None:
        """Release workers; ``cancel`` drops tasks not yet started."""

    def describe(self) -> str:
        return f"{self.name} ({self.capacity} at a time)"


class SequentialExecutor(Executor):
    """Runs each task in this process when the driver waits for it (``--jobs 1``)."""

    name = "local"

    def __init__(self) -> None:
        self.capacity = 1
        self._queue: deque[tuple[int, str, dict[str, Any]]] = deque()
        self._n = 0

    def submit(self, task: str, payload: dict[str, Any]) -> int:
        self._n += 1
        self._queue.append((self._n, task, payload))
        return self._n

    def wait(self) -> list[tuple[Any, Result]]:
        handle, task, payload = self._queue.popleft()
        return [(handle, run_task(task, payload))]


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


class PoolExecutor(Executor):
    """A ``ProcessPoolExecutor`` with the spawn start method (safe with torch's threads).

    Args:
        jobs: worker processes.
        threads: torch threads per worker (default: CPU cores // jobs, at least 1).
    """

    name = "local"

    def __init__(self, jobs: int, threads: int | None = None) -> None:
        self.capacity = jobs
        self.threads = threads or max(1, (os.cpu_count() or 1) // jobs)
        self._pool = ProcessPoolExecutor(
            max_workers=jobs,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(self.threads,),
        )
        self._futures: set[Any] = set()

    def submit(self, task: str, payload: dict[str, Any]) -> Any:
        fut = self._pool.submit(run_task, task, payload)
        self._futures.add(fut)
        return fut

    def wait(self) -> list[tuple[Any, Result]]:
        done, _ = cf_wait(self._futures, return_when=FIRST_COMPLETED)
        out = []
        for fut in done:
            self._futures.discard(fut)
            try:
                out.append((fut, fut.result()))
            except Exception as exc:  # noqa: BLE001 - BrokenProcessPool etc.: the cell failed
                out.append((fut, _lost(exc)))
        return out

    def close(self, cancel: bool = False) -> None:
        self._pool.shutdown(wait=not cancel, cancel_futures=cancel)


def _check_reachable(address: str, timeout: float) -> None:
    """Fail fast when ``host:port`` does not accept a TCP connection."""
    target = address.split("://", 1)[-1]
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise SafeReuseError(
            f"Ray address {address!r} is not HOST:PORT", fix="pass e.g. --address 10.0.0.5:6379"
        )
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout):
            pass
    except OSError as exc:
        raise SafeReuseError(
            f"the Ray cluster at {address} does not answer ({exc.strerror or type(exc).__name__})",
            fix="start it (`ray start --head`) or check --address",
        ) from None


def _use_auth_token_if_available() -> None:
    """Connect with token authentication when a token is at hand and no mode is set.

    Ray ≥ 2.5x starts local clusters with token authentication (the token in ``~/.ray/auth_token``),
    but a driver connecting to an address only sends it when ``RAY_AUTH_MODE=token``.
    """
    if "RAY_AUTH_MODE" in os.environ:
        return
    token_file = os.environ.get("RAY_AUTH_TOKEN_PATH") or os.path.expanduser("~/.ray/auth_token")
    if os.environ.get("RAY_AUTH_TOKEN") or os.path.isfile(token_file):
        os.environ["RAY_AUTH_MODE"] = "token"


class RayExecutor(Executor):
    """Cells as Ray tasks (1 CPU each) on an existing cluster, or a local one when no address is given.

    The run directory must be on storage every Ray node sees (the tasks read and write it), and the
    nodes need safereuse installed.

    Args:
        address: ``HOST:PORT`` of the cluster's GCS, ``ray://HOST:PORT`` (Ray client), ``auto``, or None
            (``$RAY_ADDRESS``, else a new local instance).
        jobs: tasks in flight (default: the cluster's CPUs).
        timeout: seconds to wait for the address to answer.
    """

    name = "ray"

    def __init__(self, address: str | None = None, jobs: int | None = None, timeout: float = 5.0) -> None:
        address = address or os.environ.get("RAY_ADDRESS") or None
        if address and address != "auto":
            _check_reachable(address, timeout)
        if address:
            _use_auth_token_if_available()  # before importing ray: it reads its config at import
        try:
            import ray
        except ImportError:
            raise SafeReuseError("Ray is not installed", fix="pip install 'safereuse[ray]'") from None
        self._ray = ray
        self._owned = False
        try:
            if not ray.is_initialized():
                ray.init(
                    address=address,
                    include_dashboard=False,
                    log_to_driver=False,
                    logging_level="ERROR",
                    configure_logging=False,
                )
                self._owned = True
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
            raise SafeReuseError(
                f"cannot connect to the Ray cluster at {address or 'auto'}: "
                f"{' '.join(str(exc).split())[:200]}",
                fix="start it (`ray start --head`) or check --address; for a cluster with token "
                "authentication, set RAY_AUTH_TOKEN (or RAY_AUTH_TOKEN_PATH)",
            ) from None
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.capacity = max(1, jobs or cpus)
        self.address = address
        self._remote = ray.remote(num_cpus=1, max_retries=0)(run_task)
        self._refs: dict[Any, Any] = {}

    def submit(self, task: str, payload: dict[str, Any]) -> Any:
        ref = self._remote.remote(task, {**payload, "threads": payload.get("threads") or 1})
        self._refs[ref] = ref
        return ref

    def wait(self) -> list[tuple[Any, Result]]:
        ready, _ = self._ray.wait(list(self._refs), num_returns=1)
        out = []
        for ref in ready:
            del self._refs[ref]
            try:
                out.append((ref, self._ray.get(ref)))
            except Exception as exc:  # noqa: BLE001 - a crashed worker or lost node: the cell failed
                out.append((ref, _lost(exc)))
        return out

    def close(self, cancel: bool = False) -> None:
        if cancel:
            for ref in list(self._refs):
                with contextlib.suppress(Exception):  # best effort
                    self._ray.cancel(ref, force=True)
        if self._owned:
            self._ray.shutdown()

    def describe(self) -> str:
        return f"ray at {self.address or 'local'} ({self.capacity} at a time)"


def make_executor(executor: str = "local", jobs: int | None = 1, address: str | None = None) -> Executor:
    """Build an executor by name (the CLI's ``--executor``).

    Args:
        executor: ``local`` or ``ray``.
        jobs: tasks at a time (local: 1 = in this process; ray: default the cluster's CPUs).
        address: Ray cluster address (``ray`` only).

    Returns:
        The :class:`Executor`.

    Raises:
        SafeReuseError: unknown executor, bad ``jobs``, ``address`` without Ray, Ray missing or unreachable.

    Example:
        >>> make_executor("local").describe()
        'local (1 at a time)'
    """
    if jobs is not None and (isinstance(jobs, bool) or jobs < 1):
        raise SafeReuseError(f"--jobs {jobs} must be ≥ 1", fix="pass e.g. --jobs 2")
    if executor == "local":
        if address:
            raise SafeReuseError("--address needs --executor ray", fix="add --executor ray")
        return SequentialExecutor() if (jobs or 1) == 1 else PoolExecutor(jobs or 1)
    if executor == "ray":
        return RayExecutor(address, jobs)
    raise SafeReuseError(f"unknown executor {executor!r}", fix="use local or ray")


__all__ = ["Executor", "PoolExecutor", "RayExecutor", "SequentialExecutor", "make_executor"]
