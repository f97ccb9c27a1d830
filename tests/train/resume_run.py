"""One training run for the resume test: ``python -m tests.train.resume_run DIR MAX_STEPS OUT``.

Trains TinyNet (BatchNorm + Dropout: parameters, batch statistics and RNG state all
matter) with AdamW for up to MAX_STEPS steps, checkpointing into DIR every 5 steps and
resuming from the latest checkpoint there, then saves the final state's leaves to OUT.
"""

import sys

import jax
import numpy as np

import jaxopt_adv
from jaxopt_adv.train import fit
from tests.train.models import loss_fn, make_data, make_model


def main(directory: str, max_steps: int, out: str) -> None:
    model = make_model()
    tx = jaxopt_adv.torch.adamw(1e-2)
    state, _ = fit(
        model,
        tx,
        loss_fn,
        make_data(40),
        epochs=2,
        batch_size=8,
        seed=3,
        checkpoint_dir=directory,
        checkpoint_every=5,
        resume=True,
        max_steps=max_steps,
        progress=False,
    )
    leaves = jax.tree.leaves(state)
    arrays = {
        f"leaf{i}": np.asarray(
            jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x
        )
        for i, x in enumerate(leaves)
    }
    np.savez(out, **arrays)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
