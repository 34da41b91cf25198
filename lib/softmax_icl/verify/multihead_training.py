"""Checks of the chapter *How a trained multi-head transformer uses its heads*: a context repeated
``k`` times is the same prompt as its distinct tokens (the fact that lets one compiled shape train
every context length).

Each check takes the prediction function under test as a parameter, so a test can show that an
attention that is not a mean over the context (e.g. a sum) is caught.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from .. import multihead_training as mt
from .. import transformer as tf
from ..checks import assert_close
from .legacy_ledger import Claim, Evidence

Predict = Callable[..., jax.Array]


def check_repeated_context_numeric(
    predict: Predict = tf.predict, seed: int = 0, N: int = 12
) -> Evidence:
    """For random GPT-2-style and linear-attention models (weights scaled up so attention is far
    from uniform), the prediction on a context of ``n`` tokens each repeated ``N/n`` times equals
    the prediction on the ``n`` tokens, in float64 to 1e-10."""
    config = mt.Config(
        name="check",
        d=5,
        s=2,
        n_values=tuple(n for n in range(1, N + 1) if N % n == 0),
        n_layers=3,
        n_heads=4,
        width=16,
        mlp_width=32,
    )
    worst = 0.0
    jax.config.update("jax_enable_x64", True)
    for attention, use_mlp in (("softmax", True), ("linear", False)):
        params = tf.init_params(
            jax.random.PRNGKey(seed),
            config.d + 1,
            config.width,
            config.n_layers,
            config.n_heads,
            mlp_width=config.mlp_width,
            use_mlp=use_mlp,
            use_layer_norm=use_mlp,
            std=0.5,
            dtype=jnp.float64,
        )
        rng = np.random.default_rng(seed)
        for n in config.n_values:
            X, y, xq = (
                rng.standard_normal((8, n, config.d)),
                rng.standard_normal((8, n)),
                rng.standard_normal((8, config.d)),
            )
            k = N // n
            short = tf.make_prompt(X, y, xq)
            long = tf.make_prompt(np.repeat(X, k, axis=1), np.repeat(y, k, axis=1), xq)
            r = assert_close(
                np.asarray(predict(params, long, attention=attention)),
                np.asarray(predict(params, short, attention=attention)),
                rtol=1e-10,
                name=f"repeated context ({attention}, n={n}, k={k})",
            )
            worst = max(worst, r.worst_relative_error)
    return Evidence(
        "numeric",
        f"N={N}, n over its divisors, softmax+MLP+LN and linear models, 3 layers x 4 heads",
        worst,
    )


def check_sampler_repeats_distinct_tokens(seed: int = 0) -> Evidence:
    """The training sampler's prompts hold exactly ``n`` distinct context tokens, each ``N/n``
    times."""
    n_values = (2, 4, 5, 10, 20)
    E, _, n = mt.sample_prompts(jax.random.PRNGKey(seed), 64, n_values, 6, 2, 0.1)
    E, n = np.asarray(E), np.asarray(n)
    for b in range(E.shape[0]):
        tokens, counts = np.unique(E[b, :-1], axis=0, return_counts=True)
        assert tokens.shape[0] == n[b] and np.all(counts == max(n_values) // n[b]), (
            f"prompt {b}: n={n[b]}, counts {counts}"
        )
    assert set(n.tolist()) == set(n_values), "not every context length was drawn"
    return Evidence("numeric", "64 prompts, n in {2,4,5,10,20}, N = 20", 0.0)


CLAIMS = [
    Claim(
        "lem-mh-repeated-context",
        "book/multihead_experiment",
        "A repeated context is the same prompt",
        "ours",
        (check_repeated_context_numeric, check_sampler_repeats_distinct_tokens),
    ),
]
