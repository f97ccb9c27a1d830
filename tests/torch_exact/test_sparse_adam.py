"""torch.optim.SparseAdam parity for jaxopt_adv.torch.sparse_adam.

torch receives sparse gradients holding exactly the participating elements: the nonzero
ones, plus (with a mask) every element of the masked rows, explicit zeros included, as
``nn.Embedding(sparse=True)`` produces them (a hybrid tensor, one sparse dimension).
"""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxopt_adv.torch import sparse_adam
from tests.harness import find_state_field
from tests.helpers.sparse_adam_parity import CASES, run_sparse_parity
from tests.helpers.torch_optim_tests import rejection_test


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("use_mask", [False, True], ids=["nonzero", "row_mask"])
@pytest.mark.parametrize("case", CASES)
def test_sparse_adam_parity(case, use_mask, dtype):
    run_sparse_parity(CASES[case], dtype, use_mask)


def test_untouched_elements_keep_params_and_moments_exactly():
    tx = sparse_adam(0.1)
    params = jnp.arange(6.0).reshape(3, 2)
    state = tx.init(params)
    _, first = tx.update(jnp.array([[1.0, 0.0], [0.0, 0.0], [0.0, -2.0]]), state, params)
    grads = jnp.array([[0.0, 0.0], [3.0, 0.0], [0.0, 0.0]])
    updates, second = tx.update(grads, first, params)
    touched = np.array([[False, False], [True, False], [False, False]])
    np.testing.assert_array_equal(np.asarray(updates)[~touched], 0.0)
    for field in ("mu", "nu"):
        before = np.asarray(find_state_field(first, field))
        after = np.asarray(find_state_field(second, field))
        np.testing.assert_array_equal(after[~touched], before[~touched])
        assert after[1, 0] != before[1, 0]


def test_mask_with_more_axes_than_its_leaf_is_rejected():
    tx = sparse_adam()
    state = tx.init(jnp.zeros(3))
    with pytest.raises(ValueError, match="mask of shape"):
        tx.update(jnp.zeros(3), state, mask=jnp.zeros((3, 1), bool))


test_bad_hyperparameters = rejection_test(
    sparse_adam,
    [
        ({"learning_rate": 0.0}, "Invalid learning rate value"),
        ({"b1": 1.0}, "Invalid beta parameter at index 0"),
        ({"b2": -0.1}, "Invalid beta parameter at index 1"),
        ({"eps": 0.0}, "Invalid epsilon value"),
    ],
)
