"""Loop-based float64 numpy re-implementations of the policy-loss rules (test oracles only)."""

import numpy as np


def ppo(lp, olp, adv, mask, eps_low=0.2, eps_high=None, dual_clip=3.0, log_ratio_clip=20.0):
    eps_high = eps_low if eps_high is None else eps_high
    out = np.zeros(lp.shape)
    clipped, dual = np.zeros(lp.shape, bool), np.zeros(lp.shape, bool)
    for idx in np.ndindex(lp.shape):
        if not mask[idx]:
            continue
        d = lp[idx] - olp[idx]
        if log_ratio_clip is not None:
            d = min(max(d, -log_ratio_clip), log_ratio_clip)
        rho, a = np.exp(d), adv[idx]
        l1 = -a * rho
        l2 = -a * min(max(rho, 1 - eps_low), 1 + eps_high)
        clipped[idx] = l2 > l1
        loss = max(l1, l2)
        if dual_clip is not None and a < 0 and loss > -dual_clip * a:
            loss, dual[idx] = -dual_clip * a, True
        out[idx] = loss
    return out, clipped, dual


def covariance(lp, adv, mask):
    m = mask.astype(bool)
    n = max(m.sum(), 1)
    a_mean = adv[m].sum() / n
    l_mean = lp[m].sum() / n
    return np.where(m, (adv - a_mean) * (lp - l_mean), 0.0)


def clip_cov_candidates(lp, olp, adv, mask, lb, ub, eps_low, eps_high):
    cov = covariance(lp, adv, mask)
    rho = np.exp(lp - olp)
    l1 = -adv * rho
    l2 = -adv * np.clip(rho, 1 - eps_low, 1 + eps_high)
    return mask.astype(bool) & ~(l2 > l1) & (cov > lb) & (cov < ub)


def kl_cov_selected(lp, adv, mask, ratio):
    cov = covariance(lp, adv, mask)
    flat_valid = np.flatnonzero(mask.reshape(-1))
    if flat_valid.size == 0:
        return np.zeros(lp.shape, bool)
    k = max(1, int(ratio * flat_valid.size))
    c = cov.reshape(-1)[flat_valid]
    # Descending by cov, ties to the earlier token.
    order = sorted(range(c.size), key=lambda i: (-c[i], flat_valid[i]))
    sel = np.zeros(lp.size, bool)
    sel[flat_valid[order[:k]]] = True
    return sel.reshape(lp.shape)


def steer(lp, olp, adv, mask, ent, mode, w_min, w_max, omega):
    p = np.clip(np.exp(lp), 1e-8, 1 - 1e-8)
    p_old = np.clip(np.exp(olp), 1e-8, 1.0)
    om = adv / p_old * p * (1 - p) * (np.log(p) + ent)
    if omega == "one_logit":
        om = om * p
    m = np.where(np.isfinite(om), np.abs(om), 0.0)
    valid = mask.astype(bool)
    mv = m[valid]
    w = np.zeros(lp.shape)
    for idx in zip(*np.nonzero(valid), strict=True):
        if mode == "linear":
            lo, hi = mv.min(), mv.max()
            if hi == lo:
                w[idx] = (w_min + w_max) / 2
            else:
                w[idx] = np.clip(w_max - (m[idx] - lo) * (w_max - w_min) / (hi - lo), w_min, w_max)
        else:
            kappa = -np.log(w_min) / max(mv.max(), 0.02)
            w[idx] = np.clip(np.exp(-kappa * m[idx]), w_min, 1.0)
    return w


def grpo(rewards, where, scale_by_std, eps):
    out = np.zeros(rewards.shape)
    for g in np.ndindex(rewards.shape[:-1]):
        r, v = rewards[g], where[g]
        if v.sum() <= 1:
            mean, std = 0.0, 1.0
        else:
            mean, std = r[v].mean(), r[v].std(ddof=1)
        for i in range(r.size):
            if v[i]:
                if not scale_by_std:
                    out[g + (i,)] = r[i] - mean
                elif std + eps > 0:  # equal rewards with eps = 0: no signal, A = 0
                    out[g + (i,)] = (r[i] - mean) / (std + eps)
    return out
