"""Every script in examples/ runs as a user would run it (its own process, the repository on the path), for a few
steps (``EXAMPLE_STEPS``), and its training loss goes down."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
STEPS = 10


def test_the_examples_are_found():
    assert {path.stem for path in EXAMPLES} >= {"equinox_tngd", "flax_linen_kfac", "flax_nnx_tngd",
                                                 "kfac_lora_multi_transform"}


@pytest.mark.slow
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.stem)
def test_example_runs_and_trains(path):
    env = dict(os.environ, EXAMPLE_STEPS=str(STEPS), OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, str(path)], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    found = re.search(rf"loss ([\d.]+) -> ([\d.]+) after {STEPS} steps", result.stdout)
    assert found, result.stdout
    first, last = map(float, found.groups())
    assert last < first, result.stdout
