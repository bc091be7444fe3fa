"""Data-parallel training on 4 host devices (a subprocess with XLA_FLAGS=--xla_force_host_platform_device_count=4)
equals the single-device run; see tests/sharding_worker.py for what each mode computes.

Tolerances: sharding only changes the order of the batch sums (gradient, GGN products, factor statistics). In
float64 each reordered sum differs by O(eps) = 2.2e-16 relative; the damped solves amplify that by at most their
condition number ||G|| / damping (<= 1e4 here, damping 1e-2), and three steps compound it: 1e-10 relative bounds
2.2e-16 * 1e4 * 3 = 6.6e-12 with a margin of 15x. The float32 runner's losses: eps32 = 1.2e-7 through the same
chain, 1.2e-7 * 1e4 * 3 = 3.6e-3, so 4e-3 relative.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

WORKER = pathlib.Path(__file__).with_name("sharding_worker.py")
ROOT = WORKER.parents[1]


def on_four_devices(*args) -> dict:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=4", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, str(WORKER), *args], env=env, capture_output=True, text=True,
                          timeout=1200, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def optimizers():
    return on_four_devices("optimizers")


@pytest.mark.parametrize("name", ["tngd", "ngd", "ngd_woodbury", "kfac", "kfac spread", "thermo_kfac spread"])
def test_sharded_batch_equals_single_device(optimizers, name):
    result = optimizers[name]
    assert result["moved"] > 1e-2  # the three steps changed the parameters
    assert result["relative_difference"] < 1e-10
    assert result["replicated_on_all_devices"]


def test_distribute_is_bitwise_the_plain_loop():
    result = on_four_devices("distribute")
    assert result["bitwise_equal"] and result["replicated_on_all_devices"]
    assert result["dtypes"] == ["float64", "float64", "bool", "int64"]


def test_runner_mesh_data_4_equals_one_device_and_rejects_uneven_batches(tmp_path):
    result = on_four_devices("runner", str(tmp_path))
    for optimizer in ("kfac", "tngd"):
        np.testing.assert_allclose(result["losses"][f"{optimizer} 4"], result["losses"][f"{optimizer} 1"], rtol=4e-3)
    assert "mesh.data=3" in result["errors"]["mesh.data=3"] and "divisible by 3" in result["errors"]["mesh.data=3"]
    assert "there are 4 cpu device(s)" in result["errors"]["mesh.data=8"]


def test_shard_batch_and_mesh_errors_on_one_device():
    import kfac_thermo

    mesh = kfac_thermo.data_mesh(1)
    with pytest.raises(ValueError, match="not 'model'"):
        kfac_thermo.shard_batch(np.zeros((4, 2)), mesh, axis="model")
    with pytest.raises(ValueError, match="asked for 0 devices"):
        kfac_thermo.data_mesh(0)
    with pytest.raises(ValueError, match="can't be split evenly"):
        kfac_thermo.shard_batch(np.zeros(()), mesh)
    assert kfac_thermo.shard_batch({"x": np.ones((3, 2))}, mesh)["x"].shape == (3, 2)
