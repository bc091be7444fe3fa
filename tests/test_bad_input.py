"""Clear errors for two mistakes a new user makes: a model passed where ``predict_fn(params, inputs)`` is expected
(a TypeError at construction naming the fix), and integer labels outside ``[0, classes)`` (which ``one_hot`` turns
into a zero target of zero loss: an error at run time, under ``jit`` too, in the loss and in every update)."""

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import pytest

import kfac_reference as ref
import kfac_thermo as kt

LOSS = "softmax_cross_entropy"
FACTORIES = {"tngd": kt.tngd, "tngd_adam": kt.tngd_adam, "ngd": kt.ngd, "ngd_cg": kt.ngd_cg,
             "ngd_woodbury": kt.ngd_woodbury, "kfac": kt.kfac, "thermo_kfac": kt.thermo_kfac}
FIX = r"predict_fn must be a function predict_fn\(params, inputs\) -> outputs over a batch; got {}\. Fix: .*eqx.partition.*eqx.combine"
LABELS = r"integer labels must be class indices in \[0, 3\) for 3 classes"


def build(name, predict_fn, x):
    kfac_args = {"example_inputs": x} if "kfac" in name else {}
    return FACTORIES[name](0.1, predict_fn=predict_fn, loss=LOSS, damping=0.1, **kfac_args)


@pytest.mark.parametrize("name", list(FACTORIES))
def test_a_model_as_predict_fn_names_the_fix(name):
    """An equinox model (its call takes the inputs only) or a one-argument function is refused at construction."""
    model = eqx.filter_eval_shape(eqx.nn.MLP, 5, 3, 4, 1, key=jr.key(0))
    x = jnp.zeros((2, 5))
    with pytest.raises(TypeError, match=FIX.format(r"an equinox Module \(MLP\), a model called as \(x, \*, key=None\)")):
        build(name, model, x)
    with pytest.raises(TypeError, match=FIX.format(r"a function called as \(inputs\)")):
        build(name, lambda inputs: inputs, x)


def test_the_helpers_check_predict_fn_too():
    model = eqx.filter_eval_shape(eqx.nn.MLP, 5, 3, 4, 1, key=jr.key(0))
    with pytest.raises(TypeError, match=FIX.format(".*")):
        kt.kfac_blocks(model, {}, jnp.zeros((2, 5)))
    with pytest.raises(TypeError, match=FIX.format(".*")):
        kt.loss_grads_and_statistics(model, LOSS, jnp.zeros((2, 5)))


class ScaledMLP(eqx.Module):
    """A predict_fn that is a Module (a pytree holding a setting), called as (params, inputs)."""

    scale: jax.Array

    def __call__(self, params, inputs):
        return self.scale * ref.mlp_predict(params, inputs)


def test_a_module_called_with_params_and_inputs_is_a_predict_fn():
    params, x, y = ref.problem(LOSS)
    tx = build("ngd", ScaledMLP(jnp.asarray(2.0)), x)
    updates, _ = ref.update(tx, ref.grad(LOSS, ref.mlp_predict, params, x, y), tx.init(params), params, (x, y))
    assert ref.flat(updates).shape == (ref.flat(params).size,)


@pytest.mark.parametrize("label", [3, -1])
def test_the_loss_refuses_a_label_out_of_range(label):
    loss = kt.SoftmaxCrossEntropy()
    z = jnp.zeros(3)
    with pytest.raises(Exception, match=LABELS):
        loss(z, jnp.asarray(label))
    with pytest.raises(Exception, match=LABELS):
        jax.block_until_ready(jax.jit(jax.vmap(loss))(jnp.zeros((2, 3)), jnp.asarray([0, label])))
    assert float(loss(z, jnp.asarray(2))) == pytest.approx(jnp.log(3.0))  # the last class is in range


@pytest.mark.parametrize("name", ["ngd", "kfac"])
@pytest.mark.parametrize("label", [3, -1])
def test_updates_refuse_labels_out_of_range(name, label):
    """Both families, under jit, with the exact GGN (whose curvature never reads the labels)."""
    params, x, y = ref.problem(LOSS)
    tx = build(name, ref.mlp_predict, x)
    grads = ref.grad(LOSS, ref.mlp_predict, params, x, y)
    with pytest.raises(Exception, match=LABELS):
        jax.block_until_ready(ref.update(tx, grads, tx.init(params), params, (x, y.at[5].set(label))))
