"""Where a result came from: package versions, platform, JAX backend and devices, git commit.

`provenance()` is what `ufom_bench.sweep` stamps on every row (as ``prov_*`` columns). It never raises: a
value that cannot be determined reads ``"unknown"`` (or ``"not installed"`` for a missing package).
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import socket
import subprocess
import sys
from collections import Counter
from pathlib import Path

__all__ = ["provenance", "git_commit"]

_PACKAGES = {
    "ufom_bench": "ufom-bench",
    "jax": "jax",
    "jaxlib": "jaxlib",
    "numpy": "numpy",
    "pandas": "pandas",
    "sympy": "sympy",
}
_GIT_TIMEOUT_S = 5.0


def provenance() -> dict[str, str]:
    """Return the provenance of the current process as a flat ``{name: str}`` dict (a fresh copy).

    Keys: one per package in ``_PACKAGES`` (its version), ``python``, ``platform``, ``cpu`` (the processor's
    model name, with the logical core count), ``host`` (the machine's name), ``jax_backend``, ``jax_devices``
    (e.g. ``"1x cpu"``), ``jax_x64`` and ``git_commit`` (see `git_commit`).
    Everything except the x64 flag, which a program may switch at run time, is computed once per process.
    """
    return {**_static(), "jax_x64": _x64()}


@functools.lru_cache(maxsize=1)
def _static() -> dict[str, str]:
    """The parts of `provenance` that cannot change within a process."""
    info = {key: _version(dist) for key, dist in _PACKAGES.items()}
    info["python"] = platform.python_version()
    info["platform"] = platform.platform()
    info["cpu"] = _cpu()
    info["host"] = _host()
    info.update(_jax_devices())
    info["git_commit"] = git_commit()
    return info


def _cpu() -> str:
    """The processor's model name and logical core count, e.g. ``"AMD EPYC 9B14 (2 logical cores)"``: the
    "model name" of /proc/cpuinfo (Linux), else `platform.processor()`; ``"unknown"`` if neither says."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except Exception:
        pass
    model = model or platform.processor() or platform.machine()
    cores = os.cpu_count()
    return f"{model} ({cores} logical cores)" if model and cores else (model or "unknown")


def _host() -> str:
    """The machine's network name (`socket.gethostname`), or ``"unknown"``."""
    try:
        return socket.gethostname() or "unknown"
    except Exception:
        return "unknown"


def _version(dist: str) -> str:
    """The installed version of distribution `dist`, or ``"not installed"``."""
    try:
        return importlib.metadata.version(dist)
    except Exception:
        return "not installed"


def _jax_devices() -> dict[str, str]:
    """JAX's default backend and its device kinds with counts, e.g. ``{"jax_backend": "gpu", ...}``."""
    try:
        import jax

        devices = jax.devices()
        counts = Counter(d.device_kind for d in devices)
        kinds = ", ".join(f"{n}x {kind}" for kind, n in sorted(counts.items()))
        return {"jax_backend": jax.default_backend(), "jax_devices": kinds}
    except Exception:
        return {"jax_backend": "unknown", "jax_devices": "unknown"}


def _x64() -> str:
    """The current ``jax_enable_x64`` flag as ``"True"``/``"False"`` (``"unknown"`` without jax)."""
    try:
        import jax

        return str(bool(jax.config.read("jax_enable_x64")))
    except Exception:
        return "unknown"


@functools.lru_cache(maxsize=None)
def git_commit(path: str | Path | None = None) -> str:
    """The short commit hash of the git checkout holding `path` (default: this package's source).

    ``"+dirty"`` is appended when tracked files differ from that commit (untracked files are ignored, as
    ``git describe --dirty`` does). Returns ``"unknown"`` when `path` is not in a git work tree, is ignored
    by it (e.g. a virtual environment inside the checkout), the repository has no commit yet, or git is
    unavailable. Never raises; cached per path.
    """
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        inside = _git(where, "rev-parse", "--is-inside-work-tree")
        if inside != "true" or _git_ok(where, "check-ignore", "-q", "."):
            return "unknown"
        commit = _git(where, "rev-parse", "--short", "HEAD")
        if not commit:
            return "unknown"
        dirty = _git(where, "status", "--porcelain", "--untracked-files=no")
        return commit + ("+dirty" if dirty else "")
    except Exception:
        return "unknown"


def _git(cwd: Path, *args: str) -> str | None:
    """Stdout of ``git args`` run in `cwd` (stripped), or None if it fails. Takes no optional locks, so it
    never contends with a concurrent git command in the same checkout."""
    proc = _run_git(cwd, *args)
    return proc.stdout.strip() if proc is not None and proc.returncode == 0 else None


def _git_ok(cwd: Path, *args: str) -> bool:
    """Whether ``git args`` run in `cwd` exits with status 0."""
    proc = _run_git(cwd, *args)
    return proc is not None and proc.returncode == 0


def _run_git(cwd: Path, *args: str) -> subprocess.CompletedProcess | None:
    """Run git quietly with a timeout; None if git cannot be run."""
    try:
        return subprocess.run(
            ["git", "--no-optional-locks", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=_GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None


if __name__ == "__main__":  # pragma: no cover - a convenience: print this machine's provenance
    for key, value in provenance().items():
        print(f"{key}: {value}", file=sys.stdout)
