r"""The model's layer structure, found in its jaxpr without rewriting the model; shared by both optimizer families.

Four jobs, one module each: layer discovery in the jaxpr (:mod:`._discovery`: :class:`LayerTap`,
:func:`register_dense`, the bias search), the tapped forward pass (:mod:`._tapped`: :class:`TappedModel`, a jaxpr
interpreter adding probes and recording layer inputs), the Jacobian-row algebra (:mod:`._jacobian`:
:class:`JacobianRows`, :func:`pairs_gram`) and convolution patches (:mod:`._patches`).

Glossary (each word has one meaning in ``kfac_thermo``):

- *layer*: a product ``y = op(x, W) (+ bias)`` of the single-example jaxpr with a parameter operand used nowhere
  else (a ``dot_general``, a ``conv_general_dilated``, or a :func:`register_dense` mark), described by a
  :class:`LayerTap`.
- *layer matrix*: a layer's weight viewed as a matrix ``[W | b]`` (n_out x n_in), the bias folded in as a last
  input column fed by 1 (:meth:`TappedModel.to_matrices`).
- *rest leaves*: the parameter leaves in no layer (:attr:`TappedModel.rest`; K-FAC's fallback block).
- *position* ``t``: the axes a layer's weight is shared over (tokens, pixels, the batch-of-one axis); T of them.
- *inputs* ``a_it`` (b, n_in, T): a layer's input (a convolution's patches) at each position
  (:func:`layer_inputs`).
- *probe*: a zero added to a layer's output; its cotangent ``delta`` is the layer's output derivative in the
  output's own layout.
- *output derivatives* ``s_ikt`` (m, b, n_out, T): the derivative of output direction ``k`` of example ``i`` with
  respect to the layer output at ``t`` (:func:`output_derivatives`).
- *Jacobian row*: ``J_i^T R_ik``, one per example ``i`` and output direction ``k`` (a row of ``W^T``, N values);
  its layer part is ``J_ik = sum_t s_ikt a_it^T``. :class:`JacobianRows` holds them in the layer structure.
- *block* is kept for curvature blocks (``kfac_thermo._curvature``: K-FAC's Kronecker and fallback blocks), and
  for sub-matrices in blocked linear algebra (a blocked Gram, block elimination).
"""

from ._discovery import LayerTap as LayerTap
from ._discovery import find_layer_taps as find_layer_taps
from ._discovery import register_dense as register_dense
from ._jacobian import JacobianRows as JacobianRows
from ._jacobian import explicit_is_cheaper as explicit_is_cheaper
from ._jacobian import explicit_jacobian as explicit_jacobian
from ._jacobian import layer_inputs as layer_inputs
from ._jacobian import output_derivatives as output_derivatives
from ._jacobian import pairs_gram as pairs_gram
from ._patches import conv_by_patches as conv_by_patches
from ._patches import patches as patches
from ._tapped import TappedModel as TappedModel
