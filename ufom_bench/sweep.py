"""Resumable sweeps: a grid of configs -> tidy rows -> ``<out_dir>/<experiment>.parquet``.

A *config* is a flat dict of JSON scalars (None, bool, int, float, str). A *cell function* maps one config
to a `pandas.DataFrame` of tidy rows (metric columns; one row per seed, step, ...). `run_sweep` runs each
config's cell once, adds the config columns, ``cell_id`` and provenance columns (``prov_*``, see
`ufom_bench.provenance`), and stores every finished cell atomically as its own file::

    <out_dir>/<experiment>/cells/<cell_id>.parquet   one per finished cell (the cache)
    <out_dir>/<experiment>.parquet                   all cells of the last sweep, sorted by config

A cell's identity (``cell_id``) is a hash of the experiment name and the config's canonical JSON, so a
re-run skips every cell whose file exists and validates (its parquet footer reads, and its stored
experiment, config and row count match); anything else (a truncated or garbage file, a file of another
config) is recomputed, never read as data. Killing a sweep (Ctrl-C, kill -9) loses only the cells in flight;
Ctrl-C raises `Interrupted`, which says how many cells are kept. A re-run with nothing to compute leaves the
combined file as it is (a finished, read-only results folder can be re-run).

`run_sweep` takes no lock: two sweeps of one experiment into one folder compute the same cells twice (each
file stays whole). `results_lock` makes a second writer fail at once; the CLI holds it on its results folder.

Cells run on a `concurrent.futures.Executor`: in the calling thread by default (JAX already parallelises
inside a cell), or on a dask.distributed cluster (`make_executor`). For any executor other than the
default, the cell function, configs and returned frames must pickle: define cell functions at module level
of an importable module. Rows are written by the calling process, so workers need no shared filesystem.

Example::

    def cell(cfg):  # module level
        return pd.DataFrame({"seed": [0, 1], "loss": [...]})

    df = run_sweep("toy", cell, grid(q=[0.1, 0.5], r=[1, 10]))
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import json
import logging
import math
import os
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from ufom_bench.provenance import provenance
from ufom_bench.errors import UserError

__all__ = [
    "CellError",
    "Interrupted",
    "SerialExecutor",
    "cell_id",
    "check_scheduler",
    "grid",
    "load",
    "make_executor",
    "results_lock",
    "run_sweep",
]

log = logging.getLogger(__name__)

Config = dict[str, Any]
CellFn = Callable[[Config], pd.DataFrame]

CELL_ID = "cell_id"
PROV_PREFIX = "prov_"
_META_KEY = b"ufom_bench.sweep"
_FORMAT = 1
_EXPERIMENT_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_TMP_SUFFIX = ".tmp"
_SCHEDULER_RE = re.compile(r"[a-z][a-z0-9+.\-]*://[^\s/]+")
CONNECT_TIMEOUT = 5  # seconds to reach a scheduler given by address


class CellError(RuntimeError):
    """A cell function raised; the message names the experiment, cell and config, ``__cause__`` the error."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a sweep; the message says how many cells of which experiment are kept, and where."""


# --------------------------------------------------------------------------------------------- configs


def grid(**axes: Iterable[Any]) -> list[Config]:
    """The cartesian product of `axes` as configs, the last axis varying fastest.

    ``grid(q=[0.1, 0.5], r=[1, 10])`` -> ``[{"q": 0.1, "r": 1}, {"q": 0.1, "r": 10}, ...]``. Combine
    heterogeneous grids by concatenating lists: ``grid(est=["fom"]) + grid(est=["ufom"], q=[0.1, 0.5])``.
    """
    names = list(axes)
    values = [list(v) for v in axes.values()]
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


def _canonical(config: Config) -> Config:
    """`config` with numpy scalars turned into Python scalars; raises on anything but flat JSON scalars."""
    if not isinstance(config, dict):
        raise TypeError(f"a config must be a dict, got {type(config).__name__}: {config!r}")
    out = {}
    for key, value in config.items():
        if not isinstance(key, str):
            raise TypeError(f"config keys must be str, got {key!r} in {config!r}")
        if key == CELL_ID or key.startswith(PROV_PREFIX):
            raise UserError(f"config key {key!r} is reserved ({CELL_ID!r}, {PROV_PREFIX}*) in {config!r}")
        if isinstance(value, np.generic):
            value = value.item()
        if value is not None and not isinstance(value, (bool, int, float, str)):
            raise TypeError(
                f"config values must be JSON scalars (None, bool, int, float, str); "
                f"{key}={value!r} ({type(value).__name__}) in {config!r}"
            )
        out[key] = value
    return out


def _config_json(config: Config) -> str:
    """The canonical JSON of a (canonical) config: sorted keys, no whitespace."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"))


def cell_id(experiment: str, config: Config) -> str:
    """A stable 20-hex-digit id of `config` within `experiment` (sha256 of both, as canonical JSON).

    Note that ``1`` and ``1.0`` are different configs (JSON tells them apart); key order does not matter.
    """
    payload = json.dumps(
        {"experiment": experiment, "config": _canonical(config)}, sort_keys=True, separators=(",", ":")
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:20]


def _check_column_kinds(configs: list[Config]) -> None:
    """Raise if a config key holds values of incompatible kinds across configs (e.g. str and int), which
    could neither be sorted nor stored as one parquet column."""
    kinds: dict[str, set[str]] = {}
    for config in configs:
        for key, value in config.items():
            if value is not None:
                kind = "bool" if isinstance(value, bool) else "number" if isinstance(value, (int, float)) else "str"
                kinds.setdefault(key, set()).add(kind)
    mixed = {k: sorted(v) for k, v in kinds.items() if len(v) > 1}
    if mixed:
        raise TypeError(f"config keys with values of mixed kinds across the grid: {mixed}")


def _sort_key(config: Config, keys: list[str]) -> tuple:
    """Order configs by `keys` in turn; NaN, then None/missing, after all values."""

    def one(value: Any) -> tuple:
        if value is None:
            return (2,)
        if isinstance(value, float) and math.isnan(value):
            return (1,)
        return (0, value)

    return tuple(one(config.get(k)) for k in keys)


# ------------------------------------------------------------------------------------------ cell files


def _cells_dir(out_dir: Path, experiment: str) -> Path:
    return out_dir / experiment / "cells"


def _write_atomic(table: pa.Table, path: Path) -> None:
    """Write `table` to `path` so that `path` is either absent, its old content, or the complete new file.

    The data go to a temporary file in the same directory (hidden, not ``*.parquet``), are fsync'ed, and
    the file is renamed over `path` (atomic on POSIX and Windows); the directory is then fsync'ed so that
    the rename survives a power loss.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{socket.gethostname()}.{os.getpid()}.{threading.get_ident()}{_TMP_SUFFIX}"
    try:
        with open(tmp, "wb") as f:
            pq.write_table(table, f, write_page_checksum=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and exc.errno and exc.filename is None:  # e.g. a full disk names no file
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    """Flush a directory entry (a rename) to disk where the OS supports it."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_stale_tmp(directory: Path) -> None:
    """Delete temporary files left in `directory` by killed writers on this host (their pid is gone)."""
    host = socket.gethostname()
    for tmp in directory.glob(f".*{_TMP_SUFFIX}"):
        rest, pid, _thread = (tmp.name[: -len(_TMP_SUFFIX)].rsplit(".", 2) + ["", ""])[:3]
        if not rest.endswith("." + host) or not pid.isdigit():
            continue
        if not _pid_alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists but not ours, or cannot tell: keep its file
    return True


def _cell_table(rows: pd.DataFrame, experiment: str, cid: str, config: Config, prov: dict[str, str]) -> pa.Table:
    """The stored form of one cell: config columns, the cell's rows, ``cell_id``, ``prov_*``, and the
    experiment, cell id, config and row count in the parquet metadata (checked by `_read_cell`)."""
    if not isinstance(rows, pd.DataFrame):
        raise TypeError(f"the cell function must return a pandas.DataFrame, got {type(rows).__name__}")
    if any(name is not None for name in rows.index.names):
        rows = rows.reset_index()  # a named index is data (e.g. step); keep it as columns
    rows = rows.reset_index(drop=True)
    clash = [c for c in rows.columns if c in config or c == CELL_ID or str(c).startswith(PROV_PREFIX)]
    if clash:
        raise UserError(
            f"the cell's columns {clash} clash with config keys or reserved names ({CELL_ID!r}, {PROV_PREFIX}*)"
        )
    front = pd.DataFrame({k: [v] * len(rows) for k, v in config.items()}, index=rows.index)
    back = pd.DataFrame(
        {CELL_ID: [cid] * len(rows), **{PROV_PREFIX + k: [v] * len(rows) for k, v in prov.items()}},
        index=rows.index,
    )
    frame = pd.concat([front, rows, back], axis=1)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = {"format": _FORMAT, "experiment": experiment, "cell_id": cid, "config": config, "n_rows": len(frame)}
    return table.replace_schema_metadata({**(table.schema.metadata or {}), _META_KEY: json.dumps(meta).encode()})


def _read_cell(path: Path, experiment: str, cid: str, config: Config) -> pa.Table | None:
    """The stored table of a finished cell, or None if `path` is absent or not a valid file of this cell
    (unreadable, checksum error, missing or mismatched metadata, wrong row count)."""
    if not path.is_file():
        return None
    try:
        table = pq.read_table(path, page_checksum_verification=True)
        meta = json.loads(table.schema.metadata[_META_KEY])
        ok = (
            meta.get("format") == _FORMAT
            and meta.get("experiment") == experiment
            and meta.get("cell_id") == cid
            and _config_json(meta.get("config")) == _config_json(config)
            and meta.get("n_rows") == table.num_rows
        )
    except Exception as exc:  # pyarrow raises several types on truncated/garbage files
        log.warning("cell file %s is unreadable (%s: %s); recomputing", path, type(exc).__name__, exc)
        return None
    if not ok:
        log.warning("cell file %s does not match its config %s; recomputing", path, _config_json(config))
        return None
    return table


def _run_cell(cell_fn: CellFn, config: Config, x64: bool | None = None) -> tuple[pd.DataFrame, dict[str, str]]:
    """Run one cell where the executor puts it, under JAX's scoped ``enable_x64(x64)`` unless ``x64`` is
    None; return its rows and the provenance it ran under (the x64 flag included)."""
    import jax

    with contextlib.nullcontext() if x64 is None else jax.enable_x64(bool(x64)):
        return cell_fn(dict(config)), provenance()


# ------------------------------------------------------------------------------------------- executors


class SerialExecutor(Executor):
    """A `concurrent.futures.Executor` that runs each call in the calling thread, inside `submit`.

    Exceptions are delivered through the future, except `BaseException`s that are not `Exception`s
    (KeyboardInterrupt, SystemExit), which propagate at once, as they would without an executor.
    """

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        future.set_running_or_notify_cancel()
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            future.set_exception(exc)
        else:
            future.set_result(result)
        return future


@contextlib.contextmanager
def make_executor(scheduler: str | None = None, **cluster_kwargs: Any) -> Iterator[Executor]:
    """Yield an executor for cells, and close what it opened on exit.

    - ``None``: a `SerialExecutor` (cells run one after another in this thread).
    - ``"local"``: a `dask.distributed.LocalCluster`. By default one single-threaded worker process per
      core (cells are often dispatch-bound Python + XLA; processes avoid contending for the GIL) and no
      dashboard; `cluster_kwargs` override these (e.g. ``processes=False`` for a threaded cluster).
    - an address such as ``"tcp://host:8786"``: a `dask.distributed.Client` of that scheduler; a
      `UserError` naming the address if it does not answer within ``CONNECT_TIMEOUT`` seconds.

    The dask executor submits with ``pure=False`` (each submission runs; no hashing of the function).
    """
    check_scheduler(scheduler)
    if scheduler is None:
        if cluster_kwargs:
            raise TypeError(f"cluster options {sorted(cluster_kwargs)} need scheduler='local'")
        yield SerialExecutor()
        return
    from dask.distributed import Client, LocalCluster

    if scheduler == "local":
        opts = {"n_workers": os.cpu_count() or 1, "threads_per_worker": 1, "dashboard_address": None}
        opts.update(cluster_kwargs)
        with LocalCluster(**opts) as cluster, Client(cluster) as client:
            yield client.get_executor(pure=False)
    else:
        if cluster_kwargs:
            raise TypeError(f"cluster options {sorted(cluster_kwargs)} need scheduler='local'")
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except OSError:
            raise UserError(
                f"cannot connect to the dask scheduler at {scheduler} (tried for {CONNECT_TIMEOUT} s)"
            ) from None
        with client:
            yield client.get_executor(pure=False)


def check_scheduler(scheduler: str | None) -> str | None:
    """`scheduler` if `make_executor` accepts it (None, ``"local"`` or an address), else a `UserError`."""
    if scheduler not in (None, "local") and not (isinstance(scheduler, str) and _SCHEDULER_RE.fullmatch(scheduler)):
        raise UserError(f"scheduler must be 'local' or an address such as tcp://host:8786, got {scheduler!r}")
    return scheduler


@contextlib.contextmanager
def results_lock(folder: str | os.PathLike) -> Iterator[Path]:
    """Hold an advisory lock on the results folder `folder` (created if missing) for the block.

    The lock is `fcntl.flock` on ``folder/.lock``: a second holder fails at once with a `UserError` naming
    the folder, and the OS releases the lock when its process ends, so a killed run leaves no stale lock.
    A read-only folder without a lock file is not locked (no run can write there).
    """
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as exc:
        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            yield folder
            return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            raise UserError(f"results folder {folder} is in use by another run (pid {holder or '?'}); wait for it "
                            "to finish or use another folder") from None
        with contextlib.suppress(OSError):  # the holder's pid, for the message above
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield folder
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------------------------- sweep


def run_sweep(
    experiment: str,
    cell_fn: CellFn,
    configs: Iterable[Config],
    out_dir: str | os.PathLike = "results",
    executor: Executor | None = None,
    progress: bool = True,
    *,
    scheduler: str | None = None,
    max_in_flight: int | None = None,
    x64: bool | None = None,
) -> pd.DataFrame:
    """Run `cell_fn` on every config not already finished, store each cell, and return all rows.

    Args:
      experiment: name of the results file (letters, digits, ``_.-``).
      cell_fn: ``config -> DataFrame`` of tidy rows. It gets a copy of the config. Its column names must
        not clash with config keys, ``cell_id`` or ``prov_*``. A named index is kept as columns. Rows are
        kept as returned, non-finite values included. Must be a module-level function unless the executor
        runs in this process.
      configs: flat dicts of JSON scalars (see `grid`); duplicates run once.
      out_dir: where ``<experiment>.parquet`` and ``<experiment>/cells/`` live.
      executor: runs the cells; default `SerialExecutor`. Not shut down here.
      progress: show a tqdm bar on a terminal (stderr), and print one line per finished cell (done/total,
        elapsed, ETA) when stdout is not a terminal (a log file, nohup, CI).
      scheduler: instead of `executor`, open one with `make_executor(scheduler)` for this sweep.
      max_in_flight: most cells submitted and not yet stored; default 1 for a `SerialExecutor` (each cell
        is stored before the next starts) and all cells otherwise (the executor queues them).
      x64: run every cell under ``jax.enable_x64(x64)`` (scoped to the cell, in whatever process runs it);
        None leaves the process's setting alone.

    Returns:
      The combined table, also written to ``out_dir/<experiment>.parquet``: config columns (in order of
      first appearance), the cells' columns, ``cell_id`` and ``prov_*``, sorted by the config columns
      (rows within a cell in the order returned). Equal to `load` of the same experiment.

    Raises:
      CellError: a cell function raised (its config is in the message). Cells finished before are stored.
      Interrupted: Ctrl-C; the cells finished before are stored.
    """
    if not _EXPERIMENT_RE.fullmatch(experiment):
        raise UserError(f"experiment name {experiment!r} must match {_EXPERIMENT_RE.pattern}")
    if executor is not None and scheduler is not None:
        raise TypeError("pass either executor or scheduler, not both")
    if executor is None:
        with make_executor(scheduler) as ex:
            return run_sweep(experiment, cell_fn, configs, out_dir, ex, progress, max_in_flight=max_in_flight,
                             x64=x64)

    out = Path(out_dir)
    cells: dict[str, Config] = {}
    for config in configs:
        canon = _canonical(config)
        cells.setdefault(cell_id(experiment, canon), canon)
    _check_column_kinds(list(cells.values()))
    cells_dir = _cells_dir(out, experiment)  # created with its first cell file
    _remove_stale_tmp(cells_dir)
    _remove_stale_tmp(out)

    tables: dict[str, pa.Table] = {}
    for cid, config in cells.items():
        table = _read_cell(cells_dir / f"{cid}.parquet", experiment, cid, config)
        if table is not None:
            tables[cid] = table
    todo = [cid for cid in cells if cid not in tables]
    if max_in_flight is None:
        max_in_flight = 1 if isinstance(executor, SerialExecutor) else max(1, len(todo))

    finished = _execute(executor, cell_fn, experiment, cells, todo, max_in_flight, x64)
    writing = None
    try:
        with contextlib.closing(finished), _Progress(experiment, len(cells), len(tables), progress) as bar:
            for cid, rows, prov in finished:  # closing: an exception here cancels what is still in flight
                path, writing = cells_dir / f"{cid}.parquet", cid
                _write_atomic(_cell_table(rows, experiment, cid, cells[cid], prov), path)
                table = _read_cell(path, experiment, cid, cells[cid])  # the combined table is what is on disk
                if table is None:
                    raise OSError(f"cell file {path} did not read back after writing")
                tables[cid] = table
                bar.update()
    except KeyboardInterrupt as exc:
        kept = len(tables)
        if writing is not None and writing not in tables:  # Ctrl-C came as its file was written: stored?
            kept += _read_cell(cells_dir / f"{writing}.parquet", experiment, writing, cells[writing]) is not None
        raise Interrupted(f"{kept} of {len(cells)} cells of {experiment} kept in {cells_dir}") from exc

    keys = list(dict.fromkeys(k for config in cells.values() for k in config))
    order = sorted(cells, key=lambda cid: (_sort_key(cells[cid], keys), cid))
    combined = _combine([tables[cid] for cid in order], keys)
    frame, path = combined.to_pandas(), out / f"{experiment}.parquet"
    if todo or not _holds(path, frame):
        _write_atomic(combined, path)
    return frame


def _execute(
    executor: Executor,
    cell_fn: CellFn,
    experiment: str,
    cells: dict[str, Config],
    todo: list[str],
    max_in_flight: int,
    x64: bool | None = None,
) -> Iterator[tuple[str, pd.DataFrame, dict[str, str]]]:
    """Submit the cells in `todo` (at most `max_in_flight` outstanding) and yield ``(cell_id, rows, prov)``
    as they finish. On a cell's failure, or when the consumer stops (Ctrl-C), cancel what is outstanding;
    a failure first yields the cells that already finished, then raises `CellError`."""
    pending = iter(todo)
    running: dict[Future, str] = {}
    try:
        while True:
            for cid in itertools.islice(pending, max(0, max_in_flight - len(running))):
                running[executor.submit(_run_cell, cell_fn, cells[cid], x64)] = cid
            if not running:
                return
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            failed = [f for f in done if f.exception() is not None]
            if failed:
                for f in running:
                    f.cancel()
                finished = [f for f in running if f.done() and not f.cancelled() and f.exception() is None]
                for f in finished:
                    yield (running[f], *f.result())
                first = failed[0]
                cid = running[first]
                raise CellError(
                    f"cell {cid} of experiment {experiment!r} failed for config {_config_json(cells[cid])}: "
                    f"{type(first.exception()).__name__}: {first.exception()}"
                ) from first.exception()
            for f in done:
                yield (running.pop(f), *f.result())
    finally:
        for f in running:
            f.cancel()


def _combine(tables: list[pa.Table], keys: list[str]) -> pa.Table:
    """Concatenate cell tables (possibly with different columns) via pandas, columns ordered as config
    keys, then the cells' own columns, then ``cell_id`` and ``prov_*``."""
    if not tables:
        return pa.table({})
    frames = [t.to_pandas() for t in tables]
    frame = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    prov = [c for c in frame.columns if str(c).startswith(PROV_PREFIX)]
    middle = [c for c in frame.columns if c not in keys and c != CELL_ID and c not in prov]
    frame = frame[[*keys, *middle, CELL_ID, *prov]]
    return pa.Table.from_pandas(frame, preserve_index=False)


def _holds(path: Path, frame: pd.DataFrame) -> bool:
    """Whether `path` is a readable parquet file of exactly `frame` (NaN equal to NaN)."""
    try:
        return path.is_file() and pq.read_table(path).to_pandas().equals(frame)
    except Exception:  # pyarrow raises several types on truncated/garbage files
        return False


class _Progress(contextlib.AbstractContextManager):
    """Progress over a sweep's cells (already finished ones counted): a tqdm bar when stderr is a terminal,
    and one line per finished cell on stdout when stdout is not a terminal."""

    def __init__(self, experiment: str, total: int, done: int, show: bool):
        from tqdm import tqdm

        # disable=None: tqdm shows itself only when its stream (stderr) is a terminal
        self.bar = tqdm(total=total, initial=done, desc=experiment, unit="cell", disable=None if show else True)
        self.lines = show and sys.stdout is not None and not sys.stdout.isatty()
        self.experiment, self.total, self.done, self.computed = experiment, total, done, 0
        self.start = time.monotonic()

    def update(self) -> None:
        self.bar.update(1)
        self.done, self.computed = self.done + 1, self.computed + 1
        if self.lines:
            elapsed = time.monotonic() - self.start
            eta = elapsed / self.computed * (self.total - self.done)
            fmt = self.bar.format_interval
            print(f"{self.experiment}: {self.done}/{self.total} cells, {fmt(elapsed)} elapsed, ETA {fmt(eta)}",
                  flush=True)

    def __exit__(self, *exc) -> None:
        self.bar.close()


def load(experiment: str, out_dir: str | os.PathLike = "results") -> pd.DataFrame:
    """The combined table of the last completed sweep of `experiment` (``out_dir/<experiment>.parquet``)."""
    path = Path(out_dir) / f"{experiment}.parquet"
    if not path.is_file():
        raise FileNotFoundError(f"no results for experiment {experiment!r}: {path} (run the sweep first)")
    return pq.read_table(path).to_pandas()
