"""Where per-subject work runs: joblib on this machine, or a Dask cluster.

The unit of work in this package is "one subject" (or one run): a function
applied to many independent items.  :func:`map_subjects` runs it

* locally with joblib (the default; ``n_jobs`` processes), or
* on a ``dask.distributed`` cluster when a scheduler is configured
  (``compute.scheduler: tcp://host:8786`` in a config, ``--scheduler`` on the
  command line, or the ``DECODER_SCHEDULER`` environment variable).  On a
  SLURM cluster, start the workers with ``dask-jobqueue`` and pass the
  ``SLURMCluster`` (or its ``scheduler_address``).

Either way a failing item is reported and the others continue: the result
lists what succeeded, what failed and why (one line each), and ends with a
summary.  A progress bar (tqdm) shows items as they complete.
"""

from __future__ import annotations

import logging
import os
import time
import traceback
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

from .errors import ConfigError, DecoderError

__all__ = ["COMPUTE_DEFAULTS", "LocalBackend", "DaskBackend", "MapResult",
           "get_backend", "scheduler_address", "backend_from_config", "check_compute",
           "map_subjects"]

log = logging.getLogger("decoder.compute")

#: The ``compute`` section a pipeline can merge into its config defaults.
COMPUTE_DEFAULTS = {"scheduler": None, "n_jobs": 1, "progress": True}

_ENV_SCHEDULER = "DECODER_SCHEDULER"


def _one_line(exc: BaseException, limit: int = 300) -> str:
    """A failure as one line: ``DecoderError`` text, else ``Type: message``."""
    text = str(exc) if isinstance(exc, DecoderError) else f"{type(exc).__name__}: {exc}"
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _call(func, key, item):
    """Run ``func(item)`` on a worker, turning an exception into a failure record.

    Catching on the worker (rather than letting the future fail) keeps the
    message one line and lets the remaining items carry on.
    """
    try:
        return key, True, func(item), None
    except Exception as exc:  # noqa: BLE001 - every failure is reported, none stops the rest
        return key, False, _one_line(exc), traceback.format_exc()


@dataclass
class MapResult:
    """Outcome of :func:`map_subjects`.

    Attributes
    ----------
    results : dict
        ``key -> value`` for every item that succeeded, in input order.
    failures : dict
        ``key -> one-line reason`` for every item that failed.
    tracebacks : dict
        ``key -> full traceback text`` for failures (for ``--debug``).
    backend : str
        Description of where the work ran.
    seconds : float
        Wall-clock time.
    n_cached : int
        Items not run because their result was passed in ``cached``.
    """

    results: dict = field(default_factory=dict)
    failures: dict = field(default_factory=dict)
    tracebacks: dict = field(default_factory=dict)
    backend: str = "local"
    seconds: float = 0.0
    n_cached: int = 0

    @property
    def ok(self) -> bool:
        """True when no item failed."""
        return not self.failures

    def summary(self, noun: str = "subjects") -> str:
        """One line: how many succeeded, came from the cache and failed (and why)."""
        total = len(self.results) + len(self.failures)
        text = f"{len(self.results)}/{total} {noun} done"
        if self.n_cached:
            text += f" ({self.n_cached} from cache)"
        text += f" in {self.seconds:.1f} s on {self.backend}"
        if self.failures:
            shown = "; ".join(f"{k}: {v}" for k, v in list(self.failures.items())[:5])
            more = len(self.failures) - 5
            text += f"; {len(self.failures)} failed — {shown}"
            if more > 0:
                text += f"; and {more} more"
        return text


def check_jobs_option(n_jobs) -> None:
    """A one-line :class:`ConfigError` unless ``-J`` is a non-zero integer (the
    ``compute.n_jobs`` that commands rerunning configs apply to every run)."""
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int) or n_jobs == 0:
        raise ConfigError(f"-J {n_jobs}: the number of processes must be a non-zero "
                          "integer", "use e.g. -J 2 (or -J -1 for every core)")


def local_workers(n_jobs: int, n_tasks: int | None = None) -> int:
    """Worker processes for ``n_jobs`` on this machine: -1 (or -k) counts back from the
    number of cores as joblib does, and more processes than cores (or than tasks) are
    not started — they would not be faster and each holds a task's memory (an ABIDE
    fold is about 1.3 GB), so ``-J 1000`` on a laptop must not fork a thousand."""
    cores = os.cpu_count() or 1
    wanted = n_jobs if n_jobs > 0 else max(cores + 1 + n_jobs, 1)
    workers = min(wanted, cores, n_tasks if n_tasks else wanted)
    if n_jobs > cores:
        log.warning("compute.n_jobs=%d is more than the %d cores here: %d processes", n_jobs,
                    cores, workers)
    return max(workers, 1)


class LocalBackend:
    """Run items on this machine with joblib.

    Parameters
    ----------
    n_jobs : int, default=1
        Worker processes; 1 runs in this process (no pickling, easy
        debugging), -1 uses every core.
    """

    def __init__(self, n_jobs: int = 1):
        _check_n_jobs(n_jobs)
        self.n_jobs = n_jobs

    @property
    def name(self) -> str:
        return f"local (joblib, n_jobs={self.n_jobs})"

    def run(self, func, keyed_items) -> Iterable[tuple]:
        """Yield ``_call`` records as items complete."""
        n_jobs = local_workers(self.n_jobs)
        if n_jobs == 1:
            for key, item in keyed_items:
                yield _call(func, key, item)
            return
        from joblib import Parallel, delayed
        yield from Parallel(n_jobs=n_jobs, return_as="generator_unordered")(
            delayed(_call)(func, key, item) for key, item in keyed_items)

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class DaskBackend:
    """Run items on a ``dask.distributed`` cluster.

    Parameters
    ----------
    scheduler : str or distributed.Client or cluster
        A scheduler address (``tcp://host:8786``), an existing ``Client``
        (used as is, not closed), or a cluster object such as
        ``LocalCluster`` or ``dask_jobqueue.SLURMCluster``.
    timeout : float, default=30
        Seconds to wait for the scheduler.
    """

    def __init__(self, scheduler, timeout: float = 30):
        try:
            from distributed import Client
        except ImportError:  # pragma: no cover - dask is an optional extra
            raise ConfigError("compute.scheduler is set but dask.distributed is not installed",
                              "pip install -e '.[dask]' or remove compute.scheduler") from None
        self._owns = not isinstance(scheduler, Client)
        if not self._owns:
            self.client = scheduler
            return
        if not (isinstance(scheduler, str) or hasattr(scheduler, "scheduler_address")):
            raise ConfigError(f"compute.scheduler must be an address like tcp://host:8786, "
                              f"got {scheduler!r}", "write --scheduler tcp://host:8786")
        # an address, or a cluster object (LocalCluster, dask_jobqueue.SLURMCluster, ...)
        try:
            self.client = Client(scheduler, timeout=timeout)
        except (OSError, TimeoutError) as exc:
            where = scheduler if isinstance(scheduler, str) else scheduler.scheduler_address
            raise ConfigError(f"cannot reach the Dask scheduler at {where} "
                              f"({_one_line(exc, 120)})",
                              "start it ('dask scheduler' and 'dask worker <address>'), "
                              "check the address, or "
                              + ("unset $DECODER_SCHEDULER"
                                 if os.environ.get("DECODER_SCHEDULER") == where
                                 else "unset compute.scheduler")
                              + " to run locally") from None

    @property
    def name(self) -> str:
        try:
            n = len(self.client.scheduler_info(n_workers=-1).get("workers", {}))
        except TypeError:  # older distributed: no n_workers argument
            n = len(self.client.scheduler_info().get("workers", {}))
        return f"dask ({self.client.scheduler.address}, {n} workers)"

    def run(self, func, keyed_items) -> Iterable[tuple]:
        """Submit every item, yield ``_call`` records as futures complete."""
        from distributed import as_completed

        token = uuid.uuid4().hex[:8]
        futures = {}
        for i, (key, item) in enumerate(keyed_items):
            fut = self.client.submit(_call, func, key, item, pure=False,
                                     key=f"decoder-{token}-{i}")
            futures[fut] = key
        for fut in as_completed(futures):
            key = futures[fut]
            try:
                yield fut.result()
            except Exception as exc:  # noqa: BLE001 - e.g. KilledWorker: report, go on
                yield key, False, _one_line(exc), traceback.format_exc()
            finally:
                fut.release()

    def close(self) -> None:
        """Close the client if this backend opened it."""
        if self._owns:
            self.client.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def get_backend(scheduler=None, n_jobs: int = 1, timeout: float = 30):
    """Choose where work runs.

    Parameters
    ----------
    scheduler : str, distributed.Client, cluster or None
        Dask scheduler address (``tcp://host:8786``), client or cluster.
        None falls back to the ``DECODER_SCHEDULER`` environment variable,
        and to local joblib when that is unset too.
    n_jobs : int, default=1
        Local worker processes (ignored with a scheduler).
    timeout : float, default=30
        Seconds to wait for a scheduler to answer.

    Returns
    -------
    LocalBackend or DaskBackend
        Use it as a context manager so a client opened here is closed.
    """
    scheduler = scheduler_address(scheduler)
    if scheduler is None:
        return LocalBackend(n_jobs)
    if isinstance(scheduler, str):
        _check_address(scheduler)
    return DaskBackend(scheduler, timeout=timeout)


def scheduler_address(scheduler=None):
    """The scheduler to use: the one given (an address, stripped; a client or cluster as
    is), else ``$DECODER_SCHEDULER`` when that is set, else None (work stays local)."""
    if scheduler is None or (isinstance(scheduler, str) and not scheduler.strip()):
        scheduler = os.environ.get(_ENV_SCHEDULER) or None
    return scheduler.strip() if isinstance(scheduler, str) else scheduler


def _check_n_jobs(n_jobs) -> None:
    if not isinstance(n_jobs, int) or isinstance(n_jobs, bool) or n_jobs == 0:
        raise ConfigError(f"compute.n_jobs must be a non-zero integer, got {n_jobs!r}",
                          "write e.g. --set compute.n_jobs=4 (or -1 for all cores)")


def _check_address(scheduler: str) -> None:
    if "://" not in scheduler or any(c.isspace() for c in scheduler):
        raise ConfigError(f"compute.scheduler {scheduler!r} is not a scheduler address",
                          "write it as tcp://host:8786 (the address 'dask scheduler' prints)")


def check_compute(compute: Mapping | None) -> None:
    """Check a config's ``compute`` section without starting or contacting anything.

    ``n_jobs`` must be a non-zero integer and ``scheduler``, when given as text, an
    address; a dry run and a sweep check this for every config before any work
    (whether the scheduler answers is known only when a run connects to it).
    """
    compute = dict(compute or {})
    _check_n_jobs(compute.get("n_jobs", 1))
    scheduler = compute.get("scheduler")
    if isinstance(scheduler, str) and scheduler.strip():
        _check_address(scheduler.strip())


def backend_from_config(config: Mapping | None):
    """Backend for a resolved config's ``compute`` section (see :data:`COMPUTE_DEFAULTS`)."""
    compute = dict(COMPUTE_DEFAULTS)
    compute.update((config or {}).get("compute") or {})
    return get_backend(compute.get("scheduler"), n_jobs=compute.get("n_jobs", 1))


def _keyed(items, keys):
    if isinstance(items, Mapping):
        if keys is not None:
            raise ConfigError("map_subjects: pass keys only with a sequence of items",
                              "use the mapping's keys, or pass a list with keys=")
        return list(items.items())
    items = list(items)
    if keys is None:
        keys = [str(i) for i in items]
    keys = list(keys)
    if len(keys) != len(items):
        raise ConfigError(f"map_subjects: {len(keys)} keys for {len(items)} items",
                          "give one key per item")
    if len(set(keys)) != len(keys):
        raise ConfigError("map_subjects: item keys are not unique", "give every item its own key")
    return list(zip(keys, items))


def map_subjects(func: Callable[[Any], Any], items, *, keys=None, backend=None,
                 scheduler=None, n_jobs: int = 1, progress: bool | None = None,
                 desc: str = "subjects",
                 on_result: Callable[[Any, Any], None] | None = None,
                 cached: Mapping | None = None) -> MapResult:
    """Apply ``func`` to every item; report failures per item and continue.

    Parameters
    ----------
    func : callable
        ``func(item) -> value``; must be picklable (module-level function or
        ``functools.partial``) unless ``n_jobs == 1`` locally.
    items : sequence or mapping
        The work; a mapping's keys name its items.
    keys : sequence of str, optional
        Names for a sequence of items (default: ``str(item)``).
    backend : LocalBackend or DaskBackend, optional
        Where to run; default ``get_backend(scheduler, n_jobs)`` (opened and
        closed here).
    scheduler, n_jobs
        See :func:`get_backend`; ignored when ``backend`` is given.
    progress : bool or None, default=None
        Show a progress bar; None shows it only on a terminal.
    desc : str, default="subjects"
        Progress bar label and the noun of the summary.
    on_result : callable, optional
        ``on_result(key, value)`` called in this process as each item
        succeeds, e.g. to write it to a cache at once.  An exception there
        marks the item failed.
    cached : mapping, optional
        ``key -> value`` already known (e.g. read from a cache): those items
        are not run, their values are returned as they are and counted in
        :attr:`MapResult.n_cached`.

    Returns
    -------
    MapResult
        Successes in input order, failures with one-line reasons, and
        :meth:`MapResult.summary`, which is also logged.
    """
    from tqdm.auto import tqdm

    keyed = _keyed(items, keys)
    order = {k: i for i, (k, _) in enumerate(keyed)}
    cached = dict(cached or {})
    done = {k: cached[k] for k, _ in keyed if k in cached}
    todo = [(k, item) for k, item in keyed if k not in cached]
    t0 = time.perf_counter()
    own = backend is None and bool(todo)
    if own:
        backend = get_backend(scheduler, n_jobs)
    out = MapResult(backend=backend.name if backend is not None else "cache",
                    n_cached=len(done))
    try:
        with tqdm(total=len(todo), desc=desc, unit=desc.rstrip("s") or "item",
                  disable=(None if progress is None else not progress), leave=False) as bar:
            for key, ok, value, tb in (backend.run(func, todo) if todo else ()):
                if ok and on_result is not None:
                    try:
                        on_result(key, value)
                    except Exception as exc:  # noqa: BLE001 - reported like a worker failure
                        ok, value, tb = False, _one_line(exc), traceback.format_exc()
                if ok:
                    done[key] = value
                else:
                    out.failures[key] = value
                    out.tracebacks[key] = tb
                    log.warning("%s %s failed: %s", desc.rstrip("s"), key, value)
                bar.update(1)
    finally:
        if own:
            backend.close()
    out.results = {k: done[k] for k in sorted(done, key=order.__getitem__)}
    out.failures = {k: out.failures[k] for k in sorted(out.failures, key=order.__getitem__)}
    out.seconds = time.perf_counter() - t0
    log.info(out.summary(desc))
    return out
