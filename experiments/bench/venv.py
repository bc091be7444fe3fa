"""A peer package in its own virtual environment, driven as a worker subprocess (experiments.bench.ou, .kfac_jax).

Some baselines cannot be imported beside the project: the public ``thermox`` has our package's import name, and
``kfac-jax`` needs an older jax. A benchmark then creates a virtual environment for the peer once, under a cache
directory (:func:`cached_venv`), and runs a worker script of ``experiments/bench/workers/`` there
(:class:`Worker`): the worker reads one JSON request per line on stdin and answers one JSON line on stdout
(``workers/protocol.py``), so the main process can interleave its own timed calls with the peer's. Anything that
prevents this (no pip index, no matching wheel, an import error, a worker crash) raises :class:`Unavailable`,
whose message is the reason the comparison was skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable, Sequence

DEFAULT_CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "thermo-opt"
WORKERS = Path(__file__).resolve().parent / "workers"


class Unavailable(Exception):
    """The peer package could not be installed or run; the message is the reason."""


def run(cmd: list[str], timeout: float = 900) -> str:
    """Run a command; its stdout, or ``Unavailable`` with the tail of its output."""
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise Unavailable(f"{' '.join(cmd[:4])}: {error}") from error
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise Unavailable(f"{' '.join(cmd[:4])} exited {done.returncode}: {' | '.join(tail)}")
    return done.stdout


def latest_version(package: str) -> str:
    """The newest version of ``package`` on the package index (``pip index versions``)."""
    out = run([sys.executable, "-m", "pip", "index", "versions", package], timeout=300)
    for line in out.splitlines():
        if line.startswith(f"{package} ("):
            return line.split("(")[1].split(")")[0]
    raise Unavailable(f"pip index versions {package} gave no version: {out.strip()[:200]}")


def cached_venv(venv: Path, probe: str, requirements: Callable[[], Sequence[Sequence[str]]]) -> Path:
    """The interpreter of the virtual environment ``venv``, created if missing or broken.

    Args:
        venv: its directory (e.g. under the benchmark's cache directory).
        probe: Python code that must run in it (``python -I -c probe``): the environment counts as usable, and an
            existing one is reused, only if it does.
        requirements: called only when the environment is (re)created: alternative ``pip install`` argument
            lists, tried in order until one installs (e.g. exact pins first, then what pip resolves).

    Raises:
        Unavailable: the environment could not be created, nothing installed, or the probe failed.
    """
    python = venv / "bin" / "python"
    check = [str(python), "-I", "-c", probe]
    if python.exists():
        try:
            run(check, timeout=300)
            return python
        except Unavailable:
            shutil.rmtree(venv)
    alternatives = [list(requirement) for requirement in requirements()]
    print(f"creating {venv} with {alternatives[0][0]} (once; cached afterwards)", flush=True)
    run([sys.executable, "-m", "venv", str(venv)], timeout=300)
    *preferred, last = alternatives
    for requirement in preferred:
        try:
            run([str(python), "-m", "pip", "install", "--quiet", *requirement])
            break
        except Unavailable:
            pass
    else:
        run([str(python), "-m", "pip", "install", "--quiet", *last])
    run(check, timeout=300)
    return python


class Worker:
    """A worker script run by another interpreter, driven by JSON lines (one request, one reply).

    The script runs as ``python -E -s script``: no ``PYTHONPATH`` and no user site can bring this project's
    packages in, and the script's own directory (``workers/``) is first on its path for its sibling modules.
    """

    def __init__(self, python: Path, script: Path, name: str):
        self.name = name
        self.process = subprocess.Popen(
            [str(python), "-E", "-s", str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )

    def call(self, op: str, **kwargs) -> dict:
        """Send ``{"op": op, **kwargs}``; the worker's reply, or ``Unavailable`` if it died."""
        self.process.stdin.write(json.dumps({"op": op, **kwargs}) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise Unavailable(f"{self.name} worker died (exit code {self.process.wait()}) during {op!r}")
        return json.loads(line)

    def close(self) -> None:
        """End the worker (end of its input) and wait for it."""
        self.process.stdin.close()
        self.process.wait(timeout=60)


def start_worker(python: Callable[[], Path], script: Path, name: str) -> tuple[Worker | None, dict]:
    """Create the environment (``python()``), start the worker ``script`` and ask its ``"versions"``.

    Returns the worker (None when unavailable) and what is recorded about the peer:
    ``{"available": True, "reason": None, **versions}`` or ``{"available": False, "reason": why}``.
    """
    try:
        worker = Worker(python(), script, name)
        versions = worker.call("versions")
    except Unavailable as error:
        print(f"{name} skipped: {error}", flush=True)
        return None, {"available": False, "reason": str(error)}
    return worker, {"available": True, "reason": None, **versions}
