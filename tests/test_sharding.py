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
import socket
import subprocess
import sys

import numpy as np
import pytest

WORKER = pathlib.Path(__file__).with_name("sharding_worker.py")
ROOT = WORKER.parents[1]


def worker(*args, devices: int = 4) -> subprocess.Popen:
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, str(WORKER), *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)


def result(process: subprocess.Popen) -> dict:
    stdout, stderr = process.communicate(timeout=1200)
    assert process.returncode == 0, stderr[-4000:]
    return json.loads(stdout.strip().splitlines()[-1])


def on_four_devices(*args) -> dict:
    return result(worker(*args))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


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


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    return on_four_devices("runner", str(tmp_path_factory.mktemp("runner")))


def test_runner_mesh_data_4_equals_one_device_and_rejects_uneven_batches(runner):
    for optimizer in ("kfac", "tngd"):
        np.testing.assert_allclose(runner["losses"][f"{optimizer} 4"], runner["losses"][f"{optimizer} 1"], rtol=4e-3)
    assert "mesh.data=3" in runner["errors"]["mesh.data=3"] and "divisible by 3" in runner["errors"]["mesh.data=3"]
    assert "there are 4 cpu device(s)" in runner["errors"]["mesh.data=8"]


def test_two_host_launch_equals_one_device(runner, tmp_path):
    """Two processes with two devices each (jax.distributed on localhost, gloo collectives): mesh.data=4 over
    both hosts; process 0 writes the metrics."""
    port = str(free_port())
    hosts = [worker("host", str(tmp_path), port, str(i), devices=2) for i in range(2)]
    first, second = (result(host) for host in hosts)
    assert first["process_count"] == 2 and first["device_count"] == 4 and second["losses"] == []
    np.testing.assert_allclose(first["losses"], runner["losses"]["kfac 1"], rtol=4e-3)


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
