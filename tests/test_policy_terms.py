"""policy_term and entropy_bonus as entreg.compose terms, from per-token signals or from hidden
states through the fused kernel (which must agree with the materialized-logits path)."""

import jax
import numpy as np
import pytest

import entreg
from entreg import losses

RNG = np.random.default_rng(0)
B, T, HID, V = 2, 5, 4, 19
X = RNG.normal(size=(B, T, HID))
TOKENS = RNG.integers(0, V, size=(B, T))
OLD = RNG.normal(size=(B, T)) * 0.1 - 3.0
ADV = np.repeat(RNG.normal(size=(B, 1)), T, axis=1)
MASK = np.arange(T)[None, :] < np.array([[5], [3]])
PARAMS = {
    "proj": np.eye(HID) + RNG.normal(size=(HID, HID)) * 0.1,
    "head": RNG.normal(size=(HID, V)),
}


def from_logits(params):
    logits = (X @ params["proj"]) @ params["head"]
    log_prob, ent = losses.token_log_probs(logits, TOKENS, temperature=0.8)
    return 0.0, {
        "log_prob": log_prob,
        "entropy": ent,
        "old_log_prob": OLD,
        "advantages": ADV,
        "mask": MASK,
    }


def from_hidden(params):
    return 0.0, {
        "hidden": X @ params["proj"],
        "lm_head": params["head"],
        "tokens": TOKENS,
        "old_log_prob": OLD,
        "advantages": ADV,
        "mask": MASK,
    }


def run(terms, forward, params=PARAMS):
    fn = entreg.compose(forward, *terms)
    (loss, (_, metrics)), grads = jax.value_and_grad(fn, has_aux=True)(params, state=fn.init())
    return loss, metrics, grads


def test_policy_term_value_is_the_aggregated_loss_and_scalar_metrics_are_extras():
    term = losses.policy_term(losses.ppo_loss, "ppo", mode="seq-mean-token-mean", eps_high=0.28)
    loss, metrics, _ = run([term], from_logits)
    s = from_logits(PARAMS)[1]
    per_token, m = losses.ppo_loss(s["log_prob"], OLD, ADV, MASK, eps_high=0.28)
    want = entreg.aggregate(per_token, MASK, "seq-mean-token-mean")
    np.testing.assert_allclose(loss, want, rtol=1e-12)
    np.testing.assert_allclose(metrics["ppo/clip_fraction"], m["clip_fraction"])
    # clip_cov's [B, T] `selected` array is not a scalar extra.
    cov = losses.policy_term(losses.clip_cov_loss, "cov", from_signals=("key",), ratio=0.2)
    _, metrics, _ = run([cov], lambda p: (0.0, {**from_logits(p)[1], "key": jax.random.key(0)}))
    assert "cov/selected" not in metrics and "cov/value" in metrics


@pytest.mark.parametrize("impl", ["xla", "reference"])
def test_from_hidden_equals_the_logits_path_in_value_and_gradient(impl):
    opts = {"temperature": 0.8, "chunk_size": 4, "implementation": impl}
    terms = lambda fh: [  # noqa: E731
        losses.policy_term(
            losses.ppo_loss, "ppo", from_signals=("entropy",), entropy_coef=0.1, from_hidden=fh
        ),
        losses.entropy_bonus(0.05, mode="seq-mean-token-sum", from_hidden=fh),
    ]
    want = run(terms(None), from_logits)
    got = run(terms(opts), from_hidden)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-11)
    for k in ("ppo/value", "entropy/value", "entropy/loss"):
        np.testing.assert_allclose(got[1][k], want[1][k], rtol=1e-11)
    for k in ("proj", "head"):
        np.testing.assert_allclose(got[2][k], want[2][k], rtol=1e-9, atol=1e-12)
    assert np.abs(got[2]["head"]).max() > 0


def test_entropy_bonus_sign_and_value():
    s = from_logits(PARAMS)[1]
    term = losses.entropy_bonus(0.3)
    r = term(s, (), 0)
    np.testing.assert_allclose(r.value, entreg.aggregate(s["entropy"], MASK, "token-mean"))
    np.testing.assert_allclose(r.loss, -0.3 * r.value)  # a bonus: lowering the loss raises H
    _, _, g = run([term], from_logits)
    stepped = jax.tree.map(lambda p, d: p - 0.1 * d, PARAMS, g)
    assert term(from_logits(stepped)[1], (), 0).value > r.value


def test_missing_signals_and_bad_options_are_named():
    s = from_hidden(PARAMS)[1]
    with pytest.raises(KeyError, match="log_prob"):
        losses.policy_term(losses.ppo_loss, "ppo")(s, (), 0)
    with pytest.raises(KeyError, match="lm_head"):
        bad = {k: v for k, v in s.items() if k != "lm_head"}
        losses.entropy_bonus(from_hidden={})(bad, (), 0)
    with pytest.raises(ValueError, match="from_hidden"):
        losses.policy_term(losses.ppo_loss, "ppo", from_hidden={"chunk": 8})
    with pytest.raises(ValueError, match="mode"):
        losses.entropy_bonus(mode="mean")
