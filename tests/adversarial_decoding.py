"""Adversarial cases for entreg.decoding (see tests/adversarial.py).

One batch carries most edges at once, one per row: NaN (garbage) and -inf slots, +-1e4 logits
with underflowing probabilities, a fully masked row, a flat row (ties everywhere). Draws are
costly to compile, so the samplers get one case each and share shapes.
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
from adversarial import Bad, Edge

from entreg import decoding

NEG = -jnp.inf
Z = jnp.array(
    [
        [2.0, jnp.nan, 1.0, NEG, 0.5, -1.0],
        [1e4, 0.0, -1e4, 3.0, 0.0, 0.0],
        [NEG] * 6,
        [0.0] * 6,
    ]
)
WHERE = jnp.broadcast_to(jnp.array([True, True, True, True, True, False]), Z.shape)
KEY = jax.random.key(0)
ROWS = Z.shape[0]


def _row_has_token(out):
    kept = np.isfinite(np.asarray(out))
    assert kept[[0, 1, 3]].any(-1).all() and not kept[2].any()
    assert not kept[0, [1, 3]].any()  # NaN and -inf stay out


def _valid_rows(out):
    token, *_, metrics = out
    assert np.asarray(metrics.valid).tolist() == [True, True, False, True]
    assert int(token[2]) == 0  # the pad token


def _processor(fn, *args, grad=True, **kw):
    # Every threshold processor returns where(keep, z, -inf) through the same code
    # (_decode.run_processor): gradients are checked for top-p (bisection), typical (entropy)
    # and the temperature (division), and left out of the other cases to save compile time.
    return Edge(
        "nan/-inf/1e4/masked/flat rows",
        lambda z: fn(z, *args, **kw),
        (Z,),
        grad_argnums=(0,) if grad else (),
        infinite_ok=True,
        expect=_row_has_token,
    )


def _bad_logits(fn, *args):
    return Bad(
        "integer logits", lambda: fn(jnp.zeros((2, 3), jnp.int32), *args), TypeError, "logits"
    )


STEP = decoding.StepMetrics(
    *([jnp.zeros(2)] * 6), jnp.zeros(2, jnp.int32), jnp.ones(2), jnp.ones(2, bool)
)


def _small_chain(carry, tokens):
    table = jnp.log(
        jnp.array(
            [[0.7, 0.2, 0.1, 0.0], [0.0, 0.5, 0.5, 0.0], [0.2, 0.2, 0.2, 0.4], [1.0, 0, 0, 0]]
        )
    )
    return table[tokens], carry + 1


def _generation(g):
    tokens, mask = np.asarray(g.tokens), np.asarray(g.mask)
    assert tokens.shape == (2, 4) and tokens[1, 0] == 0  # after token 3, token 0 has p = 1
    assert float(g.metrics.surprise_bits[1, 0]) == 0.0
    after_eos = np.cumsum(tokens == 3, axis=1) - (tokens == 3) > 0
    assert (mask == ~after_eos).all() and int(g.carry) == 4


CASES = {
    # Processors.
    "entreg.decoding.top_k": [
        _processor(decoding.top_k, 2, grad=False),
        Edge(
            "traced k, empty batch",
            lambda z: decoding.top_k(z, jnp.ones((0,), jnp.int32)),
            (jnp.zeros((0, 6)),),
            grad_argnums=(),
        ),
        Bad("k = 0", lambda: decoding.top_k(Z, 0), ValueError, "k"),
        Bad("float k", lambda: decoding.top_k(Z, 2.0), TypeError, "k"),
        _bad_logits(decoding.top_k, 2),
    ],
    "entreg.decoding.top_p": [
        _processor(decoding.top_p, 0.9, where=WHERE),
        Edge(
            "bf16, p = 1, size-1 vocabulary",
            lambda z: decoding.top_p(z, 1.0),
            (jnp.ones((3, 1), jnp.bfloat16),),
            grad_argnums=(),
            dtype=jnp.float32,
        ),
        Bad("p = 0", lambda: decoding.top_p(Z, 0.0), ValueError, "p"),
        Bad(
            "p > 1 per row", lambda: decoding.top_p(Z, jnp.array([0.5, 1.5, 1, 1])), ValueError, "p"
        ),
    ],
    "entreg.decoding.typical_p": [
        _processor(decoding.typical_p, 0.2, min_tokens_to_keep=2),
        Bad("p < 0", lambda: decoding.typical_p(Z, -0.1), ValueError, "p"),
        Bad(
            "min_tokens_to_keep",
            lambda: decoding.typical_p(Z, 0.5, min_tokens_to_keep=0),
            ValueError,
            "min_tokens_to_keep",
        ),
    ],
    "entreg.decoding.min_p": [
        _processor(decoding.min_p, 1.0, grad=False),
        Edge(
            "f16",
            lambda z: decoding.min_p(z, 0.1),
            (Z.astype(jnp.float16),),
            grad_argnums=(),
            infinite_ok=True,
            dtype=jnp.float32,
        ),
        Bad("p > 1", lambda: decoding.min_p(Z, 1.2), ValueError, "p"),
    ],
    "entreg.decoding.epsilon_cutoff": [
        _processor(decoding.epsilon_cutoff, 1.0, grad=False),  # extreme: only the argmax passes
        Bad("epsilon < 0", lambda: decoding.epsilon_cutoff(Z, -1e-3), ValueError, "epsilon"),
    ],
    "entreg.decoding.eta_cutoff": [
        _processor(decoding.eta_cutoff, 1e-30, grad=False),
        Bad("NaN epsilon", lambda: decoding.eta_cutoff(Z, float("nan")), ValueError, "epsilon"),
    ],
    "entreg.decoding.entropy_temperature": [
        _processor(
            decoding.entropy_temperature, jnp.array([0.0, 0.5, 1.0, 10.0])
        ),  # 10: unreachable
        Edge(
            "f64, flat rows",
            lambda z: decoding.entropy_temperature(z, 0.3),
            (jnp.zeros((2, 5), jnp.float64),),
            grad_argnums=(),
            dtype=jnp.float64,
        ),
        Bad(
            "negative target",
            lambda: decoding.entropy_temperature(Z, -1.0),
            ValueError,
            "target_entropy",
        ),
        Bad(
            "bounds",
            lambda: decoding.entropy_temperature(Z, 1.0, bounds=(1.0, 0.5)),
            ValueError,
            "bounds",
        ),
    ],
    "entreg.decoding.zipf_exponent": [
        Edge("nan/-inf/1e4/masked/flat rows", lambda z: decoding.zipf_exponent(z, m=4), (Z,)),
        Edge("size-1 vocabulary", decoding.zipf_exponent, (jnp.ones((2, 1)),), grad_argnums=()),
        Bad("m = 1", lambda: decoding.zipf_exponent(Z, m=1), ValueError, "m"),
    ],
    # Sampling.
    "entreg.decoding.StepMetrics": [Edge("construct", lambda: STEP, grad_argnums=())],
    "entreg.decoding.sample": [
        Edge(
            "processed rows, model surprise",
            lambda z: decoding.sample(KEY, decoding.top_p(z, 0.9), model_logits=z),
            (Z,),
            grad_argnums=(),
            expect=lambda out: _valid_rows((out[0], out[1])),
        ),
        Bad("key shape", lambda: decoding.sample(jax.random.split(KEY, 3), Z), ValueError, "key"),
        Bad(
            "model_logits shape",
            lambda: decoding.sample(KEY, Z, model_logits=Z[:2]),
            ValueError,
            "logits",
        ),
    ],
    "entreg.decoding.sampler": [
        Edge(
            "the same draw through sampler()",
            lambda z: decoding.sampler(partial(decoding.top_p, p=0.9))(KEY, z, None),
            (Z,),
            grad_argnums=(),
            expect=_valid_rows,
        ),
        Bad("not callable", lambda: decoding.sampler(None), TypeError, "processors"),
        Bad("pad token", lambda: decoding.sampler(pad_token=0.5), TypeError, "pad_token"),
    ],
    # Mirostat.
    "entreg.decoding.MirostatState": [
        Edge(
            "construct",
            lambda mu: decoding.MirostatState(mu),
            (jnp.array([1.0, -2.0]),),
            grad_argnums=(),
        )
    ],
    "entreg.decoding.MirostatState.initial": [
        Edge(
            "per-row tau",
            lambda: decoding.MirostatState.initial(jnp.array([1e-3, 5.0, 1e3]), 3),
            grad_argnums=(),
        ),
        Bad("tau = 0", lambda: decoding.MirostatState.initial(0.0, 2), ValueError, "tau"),
        Bad(
            "batch shape",
            lambda: decoding.MirostatState.initial(1.0, "2"),
            TypeError,
            "batch_shape",
        ),
    ],
    "entreg.decoding.MirostatMetrics": [
        Edge(
            "construct",
            lambda: decoding.MirostatMetrics(*STEP, mu=jnp.ones(2), k=jnp.ones(2, jnp.int32)),
            grad_argnums=(),
        )
    ],
    "entreg.decoding.mirostat_v1": [
        Edge(
            "extreme mu (k at both ends), nan/-inf/1e4/masked/flat rows",
            lambda z: decoding.mirostat_v1(
                KEY, z, decoding.MirostatState(jnp.array([-50.0, 1e4, 0.0, 3.0])), 3.0
            ),
            (Z,),
            grad_argnums=(),
            expect=_valid_rows,
        ),
        Bad(
            "tau <= 0",
            lambda: decoding.mirostat_v1(KEY, Z, decoding.MirostatState(jnp.ones(ROWS)), 0.0),
            ValueError,
            "tau",
        ),
        Bad(
            "state shape",
            lambda: decoding.mirostat_v1(KEY, Z, decoding.MirostatState(jnp.ones(2)), 1.0),
            ValueError,
            "state",
        ),
    ],
    "entreg.decoding.mirostat_v2": [
        Edge(
            "bf16 logits, truncated feedback",
            lambda z: decoding.mirostat_v2(
                KEY,
                z.astype(jnp.bfloat16),
                decoding.MirostatState(jnp.ones(ROWS)),
                1.0,
                feedback="truncated",
            ),
            (Z,),
            grad_argnums=(),
            expect=_valid_rows,
        ),
        Bad(
            "feedback",
            lambda: decoding.mirostat_v2(
                KEY, Z, decoding.MirostatState(jnp.ones(ROWS)), 1.0, feedback="bits"
            ),
            ValueError,
            "feedback",
        ),
        Bad(
            "eta < 0",
            lambda: decoding.mirostat_v2(
                KEY, Z, decoding.MirostatState(jnp.ones(ROWS)), 1.0, eta=-1.0
            ),
            ValueError,
            "eta",
        ),
    ],
    # Generation and switching.
    "entreg.decoding.Generation": [
        Edge(
            "construct",
            lambda: decoding.Generation(
                jnp.zeros((2, 3), jnp.int32), jnp.ones((2, 3), bool), None, None, (), None
            ),
            grad_argnums=(),
        )
    ],
    "entreg.decoding.generate": [
        Edge(
            "EOS, a token with p = 1, -inf transitions",
            lambda: decoding.generate(
                KEY, _small_chain, 0, jnp.array([0, 3]), 4, sampler=decoding.sampler(), eos_token=3
            ),
            grad_argnums=(),
            expect=_generation,
        ),
        Bad(
            "num_steps",
            lambda: decoding.generate(
                KEY, _small_chain, 0, jnp.array([0]), 0, sampler=decoding.sampler()
            ),
            ValueError,
            "num_steps",
        ),
        Bad(
            "row_ids",
            lambda: decoding.generate(
                KEY,
                _small_chain,
                0,
                jnp.array([0]),
                2,
                sampler=decoding.sampler(),
                row_ids=jnp.arange(3),
            ),
            ValueError,
            "row_ids",
        ),
    ],
    "entreg.decoding.SwitchState": [
        Edge(
            "construct",
            lambda: decoding.SwitchState(
                jnp.zeros((2, 3)),
                jnp.zeros(2, jnp.int32),
                jnp.zeros(2, jnp.int32),
                jnp.zeros(2, bool),
            ),
            grad_argnums=(),
        )
    ],
    "entreg.decoding.SwitchState.initial": [
        Edge(
            "empty batch, window 1",
            lambda: decoding.SwitchState.initial((0,), window=1),
            grad_argnums=(),
        ),
        Bad("window", lambda: decoding.SwitchState.initial(2, window=0), ValueError, "window"),
    ],
    "entreg.decoding.SwitchMetrics": [
        Edge(
            "construct",
            lambda: decoding.SwitchMetrics(jnp.zeros(2, bool), jnp.ones(2), jnp.ones(2)),
            grad_argnums=(),
        )
    ],
    "entreg.decoding.entropy_switch": [
        Edge(
            "one step on nan/-inf/1e4/masked/flat rows",
            lambda z: decoding.entropy_switch(lambda c, t: (z, c), lambda c, t: (z * 2, c), 1.0)(
                (decoding.SwitchState.initial(ROWS, window=2), (), ()), jnp.zeros(ROWS, jnp.int32)
            ),
            (Z,),
            infinite_ok=True,
        ),
        Bad(
            "min_dwell",
            lambda: decoding.entropy_switch(_small_chain, _small_chain, 1.0, min_dwell=0),
            ValueError,
            "min_dwell",
        ),
        Bad(
            "threshold",
            lambda: decoding.entropy_switch(_small_chain, _small_chain, "1"),
            TypeError,
            "threshold",
        ),
    ],
}
