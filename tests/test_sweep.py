"""Tests of ufom_bench.sweep (resumable, atomic, executor-agnostic sweeps) and ufom_bench.provenance."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ufom_bench import provenance as prov_mod
from ufom_bench.errors import UserError
from ufom_bench.sweep import CellError, Interrupted, cell_id, grid, load, make_executor, results_lock, run_sweep

EXP = "toy"
CONFIGS = grid(q=[0.1, 0.5], r=[1, 3, 10])
PROV_KEYS = {
    "ufom_bench", "jax", "jaxlib", "numpy", "pandas", "sympy", "python", "platform", "cpu", "host",
    "jax_backend", "jax_devices", "jax_x64", "git_commit",
}


def toy_cell(cfg: dict) -> pd.DataFrame:
    """Two seeds x two steps of a cheap numpy 'metric'; config q=0.5, r=10 yields non-finite values."""
    rows = []
    for seed in range(2):
        rng = np.random.default_rng([seed, cfg["r"], int(cfg["q"] * 10)])
        for step in range(2):
            loss = float(rng.normal()) * cfg["q"] + cfg["r"]
            if cfg["q"] == 0.5 and cfg["r"] == 10:
                loss = np.nan if seed == 0 else np.inf
            rows.append({"seed": seed, "step": step, "loss": loss})
    return pd.DataFrame(rows)


class Counting:
    """A cell function that records the configs it was called with (in-process executors only)."""

    def __init__(self, fn=toy_cell, interrupt_at: int | None = None):
        self.fn, self.interrupt_at, self.calls = fn, interrupt_at, []

    def __call__(self, cfg):
        self.calls.append(dict(cfg))
        if self.interrupt_at is not None and len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        return self.fn(cfg)


def cell_files(out: Path, experiment: str = EXP) -> dict[str, Path]:
    return {p.stem: p for p in (out / experiment / "cells").glob("*.parquet")}


def assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a.reset_index(drop=True), b.reset_index(drop=True))


# Provenance that legitimately differs between processes: the checkout may be committed to or edited while
# the tests run (each process reads git once), and the x64 flag is per process (conftest sets it here only).
PER_PROCESS = ["prov_git_commit", "prov_jax_x64"]


def assert_same_across_processes(a: pd.DataFrame, b: pd.DataFrame) -> None:
    assert list(a.columns) == list(b.columns)
    assert_same(a.drop(columns=PER_PROCESS), b.drop(columns=PER_PROCESS))


@pytest.fixture
def reference(tmp_path) -> pd.DataFrame:
    """An uninterrupted in-process sweep of CONFIGS."""
    return run_sweep(EXP, toy_cell, CONFIGS, out_dir=tmp_path / "ref", progress=False)


# ------------------------------------------------------------------------------------------ configs


def test_grid_is_the_cartesian_product_last_axis_fastest():
    assert grid(a=[1, 2], b=["x", "y"]) == [
        {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"},
    ]
    assert grid() == [{}]


def test_cell_id_is_stable_and_canonical():
    a = cell_id(EXP, {"q": 0.1, "r": 3})
    assert a == cell_id(EXP, {"r": 3, "q": 0.1})  # key order is irrelevant
    assert a == cell_id(EXP, {"q": np.float64(0.1), "r": np.int64(3)})  # numpy scalars are their values
    assert a != cell_id("other", {"q": 0.1, "r": 3})  # experiment is part of the identity
    assert a != cell_id(EXP, {"q": 0.1, "r": 3.0})  # JSON tells 3 from 3.0
    assert re.fullmatch(r"[0-9a-f]{20}", a)  # 20 hex digits: a file name


@pytest.mark.parametrize(
    "configs, error",
    [
        ([{"q": [1, 2]}], TypeError),  # not a scalar
        ([{"cell_id": 1}], ValueError),  # reserved
        ([{"prov_x": 1}], ValueError),  # reserved
        ([{"q": 1}, {"q": "a"}], TypeError),  # one key, two kinds
    ],
)
def test_bad_configs_are_rejected(tmp_path, configs, error):
    with pytest.raises(error):
        run_sweep(EXP, toy_cell, configs, out_dir=tmp_path, progress=False)


# ------------------------------------------------------------------------------------------- rows


def test_sweep_rows_columns_and_files(tmp_path):
    out = tmp_path / "res"
    shuffled = [CONFIGS[i] for i in (4, 0, 5, 2, 1, 3)] + [CONFIGS[0]]  # out of order, one duplicate
    df = run_sweep(EXP, toy_cell, shuffled, out_dir=out, progress=False)

    prov_cols = sorted("prov_" + k for k in PROV_KEYS)
    assert list(df.columns[:6]) == ["q", "r", "seed", "step", "loss", "cell_id"]
    assert sorted(df.columns[6:]) == prov_cols
    assert len(df) == len(CONFIGS) * 4  # 2 seeds x 2 steps per cell, duplicate run once
    # sorted by the config columns (grid order), rows within a cell as the cell returned them
    expected = pd.concat(
        [toy_cell(c).assign(q=c["q"], r=c["r"]) for c in CONFIGS], ignore_index=True
    )
    assert_same(df[["q", "r", "seed", "step", "loss"]], expected[["q", "r", "seed", "step", "loss"]])
    assert (df.groupby(["q", "r"])["cell_id"].nunique() == 1).all()
    assert set(df["cell_id"]) == {cell_id(EXP, c) for c in CONFIGS}
    assert (df["prov_jax_x64"] == "False").all()  # tests run in JAX's defaults
    assert df["prov_numpy"].iloc[0] == np.__version__

    # non-finite values are data: kept, not dropped
    bad = df[(df.q == 0.5) & (df.r == 10)]
    assert len(bad) == 4 and bad["loss"].isna().sum() == 2 and np.isposinf(bad["loss"]).sum() == 2

    # one file per cell, the combined file equals the return value
    assert set(cell_files(out)) == {cell_id(EXP, c) for c in CONFIGS}
    assert_same(load(EXP, out), df)
    assert not list((out / EXP / "cells").glob(".*"))  # no temporary files left


def test_heterogeneous_configs_and_named_index(tmp_path):
    def cell(cfg):
        return pd.DataFrame({"value": [1.0, 2.0]}, index=pd.Index([0, 1], name="step"))

    configs = grid(est=["ufom"], q=[0.5, 0.1]) + grid(est=["fom"])
    df = run_sweep("het", cell, configs, out_dir=tmp_path, progress=False)
    assert list(df.columns[:4]) == ["est", "q", "step", "value"]
    assert list(df["est"]) == ["fom"] * 2 + ["ufom"] * 4  # sorted by est, then q (missing last)
    assert df["q"].isna().sum() == 2 and list(df["q"].iloc[2:]) == [0.1, 0.1, 0.5, 0.5]
    assert_same(load("het", tmp_path), df)


def test_cell_error_names_config_and_writes_no_cell(tmp_path):
    def cell(cfg):
        if cfg["r"] == 3:
            raise ValueError("boom")
        return toy_cell(cfg)

    with pytest.raises(CellError, match=r'"q":0.1,"r":3.*ValueError: boom') as info:
        run_sweep(EXP, cell, CONFIGS, out_dir=tmp_path, progress=False)
    assert isinstance(info.value.__cause__, ValueError)
    assert set(cell_files(tmp_path)) == {cell_id(EXP, {"q": 0.1, "r": 1})}  # the one before it
    assert not (tmp_path / f"{EXP}.parquet").exists()


def test_failed_first_cell_leaves_no_folder(tmp_path):
    with pytest.raises(CellError, match="worker failure"):
        run_sweep(EXP, _failing_cell, CONFIGS, out_dir=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_cells_finished_alongside_a_failure_are_stored(tmp_path):
    def cell(cfg):
        if cfg["r"] == 3:
            raise ValueError("boom")
        return toy_cell(cfg)

    # a SerialExecutor with all cells in flight: every cell has run before the failure is seen
    with pytest.raises(CellError, match="boom"):
        run_sweep(EXP, cell, CONFIGS, out_dir=tmp_path, progress=False, max_in_flight=len(CONFIGS))
    failing = {cell_id(EXP, c) for c in CONFIGS if c["r"] == 3}
    assert set(cell_files(tmp_path)) == {cell_id(EXP, c) for c in CONFIGS} - failing


def test_cell_must_return_dataframe_without_clashing_columns(tmp_path):
    with pytest.raises(TypeError, match="DataFrame"):
        run_sweep(EXP, lambda cfg: {"loss": 1.0}, CONFIGS, out_dir=tmp_path, progress=False)
    with pytest.raises(ValueError, match="clash"):
        run_sweep(EXP, lambda cfg: pd.DataFrame({"q": [1.0]}), CONFIGS, out_dir=tmp_path, progress=False)


# ----------------------------------------------------------------------------------------- resume


def test_interrupted_sweep_resumes_without_recomputing(tmp_path, reference):
    out = tmp_path / "res"
    first = Counting(interrupt_at=4)
    with pytest.raises(Interrupted, match=f"^3 of 6 cells of toy kept in {out / EXP / 'cells'}$"):
        run_sweep(EXP, first, CONFIGS, out_dir=out, progress=False)
    done = set(cell_files(out))
    assert done == {cell_id(EXP, c) for c in CONFIGS[:3]}
    assert not (out / f"{EXP}.parquet").exists()

    second = Counting()
    df = run_sweep(EXP, second, CONFIGS, out_dir=out, progress=False)
    assert second.calls == CONFIGS[3:]  # exactly the unfinished cells, once each
    assert_same(df, reference)
    assert not df.duplicated(["cell_id", "seed", "step"]).any()

    third, before = Counting(), os.stat(out / f"{EXP}.parquet")
    assert_same(run_sweep(EXP, third, CONFIGS, out_dir=out, progress=False), reference)
    assert third.calls == []
    after = os.stat(out / f"{EXP}.parquet")  # nothing new (NaN cells included): the combined file is left alone
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_results_lock_admits_one_holder_at_a_time(tmp_path):
    folder = tmp_path / "res"
    with results_lock(folder):
        with pytest.raises(UserError, match=rf"results folder {folder} is in use by another run \(pid {os.getpid()}\)"):
            with results_lock(folder):
                pass
    with results_lock(folder):  # released on exit
        pass


def test_progress_lines_when_stdout_is_not_a_terminal(tmp_path, capsys):
    run_sweep(EXP, toy_cell, CONFIGS[:2], out_dir=tmp_path)
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(",")[0] for line in lines] == ["toy: 1/2 cells", "toy: 2/2 cells"]
    run_sweep(EXP, toy_cell, CONFIGS[:2], out_dir=tmp_path)
    assert capsys.readouterr().out == ""  # nothing computed, nothing logged


SLOW_MODULE = textwrap.dedent(
    """
    import os, sys, threading
    import numpy as np, pandas as pd
    from ufom_bench.sweep import grid, run_sweep

    CONFIGS = grid(a=list(range(4)), b=list(range(3)))

    def slow_cell(cfg):
        with open(os.environ["CALLS"], "a") as f:
            f.write(f"{cfg['a']},{cfg['b']}\\n")
        with open(os.environ["CALLS"]) as f:
            started = f.read().count("\\n")
        if "HANG_AFTER" in os.environ and started > int(os.environ["HANG_AFTER"]):
            threading.Event().wait()  # this cell never ends: the sweep waits here to be killed
        rng = np.random.default_rng([cfg["a"], cfg["b"]])
        return pd.DataFrame({"step": np.arange(3), "loss": rng.normal(size=3)})

    if __name__ == "__main__":
        run_sweep("slow", slow_cell, CONFIGS, out_dir=sys.argv[1], progress=False)
    """
)


def _slow_sweep(tmp_path, out, calls, hang_after=None):
    """The sweep of SLOW_MODULE in a subprocess; with ``hang_after``, the cell after that many hangs."""
    env = {**os.environ, "CALLS": str(calls), "PYTHONPATH": str(tmp_path)}
    if hang_after is not None:
        env["HANG_AFTER"] = str(hang_after)
    return subprocess.Popen([sys.executable, str(tmp_path / "slowcells.py"), str(out)], env=env)


def _called(calls: Path) -> list[dict]:
    lines = calls.read_text().split() if calls.exists() else []
    return [{"a": int(a), "b": int(b)} for a, b in (line.split(",") for line in lines)]


def test_sigkilled_sweep_resumes_to_the_uninterrupted_result(tmp_path):
    (tmp_path / "slowcells.py").write_text(SLOW_MODULE)
    configs = grid(a=list(range(4)), b=list(range(3)))
    out = tmp_path / "killed"
    cells = out / "slow" / "cells"

    # Killed inside its 4th cell, which hangs: the sweep is serial (each cell stored before the next starts),
    # so exactly 3 cells are stored, whatever the machine's load. The deadline only stops a sweep that never
    # gets there; it starts in seconds (imports), and 120 s is far more than that.
    calls1 = tmp_path / "calls1"
    proc = _slow_sweep(tmp_path, out, calls1, hang_after=3)
    try:
        deadline = time.monotonic() + 120
        while not (calls1.exists() and calls1.read_text().count("\n") >= 4):
            assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended before being killed"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()

    finished = set(cell_files(out, "slow"))
    assert len(finished) == 3 and len(list(cells.glob("*.parquet"))) == 3
    assert not (out / "slow.parquet").exists()
    for path in cell_files(out, "slow").values():  # whatever is visible is a complete cell
        assert pq.read_table(path).num_rows == 3

    # The timeouts only stop a hung sweep: one takes seconds (mostly imports).
    assert _slow_sweep(tmp_path, out, tmp_path / "calls2").wait(timeout=120) == 0
    recomputed = _called(tmp_path / "calls2")
    assert sorted(cell_id("slow", c) for c in recomputed) == sorted(
        cell_id("slow", c) for c in configs if cell_id("slow", c) not in finished
    )

    ref = tmp_path / "uninterrupted"
    assert _slow_sweep(tmp_path, ref, tmp_path / "calls3").wait(timeout=120) == 0
    assert len(_called(tmp_path / "calls3")) == len(configs)
    resumed = load("slow", out)
    assert len(resumed) == 3 * len(configs)
    assert_same_across_processes(resumed, load("slow", ref))


# ---------------------------------------------------------------------------------- corrupt cells


def _truncate(path, other):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garbage(path, other):
    path.write_bytes(b"this is not a parquet file\n" * 50)


def _empty(path, other):
    path.write_bytes(b"")


def _other_config(path, other):
    path.write_bytes(other.read_bytes())  # a valid cell file, but of another config


def _no_metadata(path, other):
    pq.write_table(pa.Table.from_pandas(toy_cell({"q": 0.1, "r": 1})), path)  # valid parquet, not ours


def _row_dropped(path, other):
    table = pq.read_table(path)
    pq.write_table(table.slice(1), path)  # keeps the schema metadata, so its stored row count is wrong


def _config_mismatch(path, other):
    table = pq.read_table(path)
    meta = json.loads(table.schema.metadata[b"ufom_bench.sweep"])
    meta["config"] = {**meta["config"], "q": 99.0}  # same cell id and rows, another stored config
    pq.write_table(table.replace_schema_metadata({**table.schema.metadata, b"ufom_bench.sweep": json.dumps(meta)}), path)


@pytest.mark.parametrize(
    "corrupt", [_truncate, _garbage, _empty, _other_config, _no_metadata, _row_dropped, _config_mismatch]
)
def test_corrupt_cell_file_is_recomputed_not_read(tmp_path, reference, corrupt):
    ref_dir = tmp_path / "ref"
    victim, other = CONFIGS[2], CONFIGS[4]
    files = cell_files(ref_dir)
    corrupt(files[cell_id(EXP, victim)], files[cell_id(EXP, other)])

    again = Counting()
    df = run_sweep(EXP, again, CONFIGS, out_dir=ref_dir, progress=False)
    assert again.calls == [victim]
    assert_same(df, reference)
    assert pq.read_table(files[cell_id(EXP, victim)]).num_rows == 4  # repaired


def test_stale_temporary_files_are_ignored_and_removed(tmp_path, reference):
    cells = tmp_path / "ref" / EXP / "cells"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    import socket

    stale = cells / f".{cell_id(EXP, CONFIGS[0])}.parquet.{socket.gethostname()}.{dead.pid}.1.tmp"
    stale.write_bytes(b"partial")
    again = Counting()
    assert_same(run_sweep(EXP, again, CONFIGS, out_dir=tmp_path / "ref", progress=False), reference)
    assert again.calls == [] and not stale.exists()


# ----------------------------------------------------------------------------------------- dask


def test_dask_local_cluster_gives_the_in_process_rows(tmp_path, reference):
    with make_executor("local", processes=False, n_workers=2, threads_per_worker=1) as ex:
        df = run_sweep(EXP, toy_cell, CONFIGS, out_dir=tmp_path / "dask", executor=ex, progress=False)
        # a failing cell on the cluster is reported with its config too
        with pytest.raises(CellError, match=r'"q":0.1,"r":1'):
            run_sweep("fails", _failing_cell, CONFIGS[:1], out_dir=tmp_path / "dask", executor=ex, progress=False)
    assert_same(df, reference)


def test_dask_worker_processes_via_scheduler_argument(tmp_path, reference):
    # the default LocalCluster: one single-threaded worker process per core; cells pickle to workers
    df = run_sweep(EXP, toy_cell, CONFIGS, out_dir=tmp_path / "procs", scheduler="local", progress=False)
    assert_same_across_processes(df, reference)
    assert df["prov_jax_x64"].isin(["True", "False"]).all()  # read in the worker (conftest's x64 stays here)


def _failing_cell(cfg):
    raise RuntimeError("worker failure")


def test_make_executor_default_is_serial_in_this_thread():
    import threading

    with make_executor(None) as ex:
        assert ex.submit(threading.get_ident).result() == threading.get_ident()
        assert isinstance(ex.submit(int, "x").exception(), ValueError)


# ------------------------------------------------------------------------------------ provenance


def test_provenance_is_flat_strings_and_cached():
    info = prov_mod.provenance()
    assert set(info) == PROV_KEYS
    assert all(isinstance(v, str) and v for v in info.values())
    assert info["jax_backend"] in {"cpu", "gpu", "tpu", "cuda", "rocm"}
    info["jax"] = "mutated"
    assert prov_mod.provenance()["jax"] != "mutated"  # a fresh copy each call
    json.dumps(info)


def test_git_commit_clean_dirty_and_outside(tmp_path):
    git_commit = prov_mod.git_commit.__wrapped__  # bypass the per-path cache
    repo = tmp_path / "repo"
    assert git_commit(tmp_path) == "unknown"  # not a checkout
    repo.mkdir()
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], check=True)
    assert git_commit(repo) == "unknown"  # no commit yet
    (repo / "f.txt").write_text("a")
    subprocess.run([*git, "add", "f.txt"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    head = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert git_commit(repo) == head
    (repo / "untracked.txt").write_text("u")
    assert git_commit(repo) == head  # untracked files do not make it dirty
    (repo / "f.txt").write_text("b")
    assert git_commit(repo) == head + "+dirty"
    (repo / ".gitignore").write_text("venv/\n")
    (repo / "venv").mkdir()
    assert git_commit(repo / "venv") == "unknown"  # an ignored directory is not the checkout's code


def _dtype_cell(config):
    import jax.numpy as jnp

    return pd.DataFrame({"dtype": [str(jnp.ones(()).dtype)]})


@pytest.mark.parametrize("x64, dtype", [(True, "float64"), (False, "float32"), (None, "float32")])
def test_x64_is_scoped_to_each_cell_and_recorded(tmp_path, x64, dtype):
    """run_sweep(x64=...) runs each cell under JAX's scoped enable_x64 and records the flag it ran under;
    the process's own setting is left alone."""
    import jax

    df = run_sweep("prec", _dtype_cell, [{"i": 0}], out_dir=tmp_path, progress=False, x64=x64)
    assert list(df["dtype"]) == [dtype]
    assert list(df["prov_jax_x64"]) == [str(dtype == "float64")]
    assert not jax.config.read("jax_enable_x64")
