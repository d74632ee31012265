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


def _entropy(z):
    p = np.exp(z - z.max())
    p /= p.sum()
    return -np.sum(p * np.log(p))


def steer(logits, tokens, olp, adv, mask, mode, w_min, w_max, omega, h=1e-5):
    """STEER weights from the paper's definitions, on explicit policy logits [..., V].

    A token's update is the gradient step of its surrogate -A pi(a) / pi_old(a) on its own logit
    z_a: dz_a = eta (A / pi_old) d pi(a) / d z_a. Its predicted entropy change is
    dH = eta Omega with Omega = (dH / dz_a)(dz_a / eta), both derivatives by central finite
    differences of the softmax (no closed form). m = |Omega| (the released code's variant divides
    by pi(a)); weights: linear w = w_max - (m - m_min)(w_max - w_min) / (m_max - m_min) (the
    midpoint if all m are equal), exp w = clip(exp(-kappa m), w_min, 1) with
    kappa = -log(w_min) / max(m_max, 0.02); extrema over the valid tokens.
    """
    m = np.zeros(tokens.shape)
    for idx in np.ndindex(tokens.shape):
        z, a = logits[idx].astype(np.float64), tokens[idx]
        e = np.zeros_like(z)
        e[a] = h

        def prob(zz, a=a):
            q = np.exp(zz - zz.max())
            return q[a] / q.sum()

        dp_dz = (prob(z + e) - prob(z - e)) / (2 * h)
        dh_dz = (_entropy(z + e) - _entropy(z - e)) / (2 * h)
        om = dh_dz * adv[idx] / np.exp(olp[idx]) * dp_dz
        if omega == "released_code":
            om /= prob(z)
        m[idx] = abs(om)
    valid = mask.astype(bool)
    w = np.zeros(tokens.shape)
    if not valid.any():
        return w
    lo, hi = m[valid].min(), m[valid].max()
    if mode == "linear":
        w = (w_min + w_max) / 2 if hi == lo else w_max - (m - lo) * (w_max - w_min) / (hi - lo)
        w = np.clip(w, w_min, w_max)
    else:
        w = np.clip(np.exp(np.log(w_min) / max(hi, 0.02) * m), w_min, 1.0)
    return np.where(valid, w, 0.0)


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


def epo_run(entropies, mask, turns, num_turns, *, c_h, c_s, total_epochs, kappa_l, kappa_r):
    """EPO (Xu et al. 2025) over consecutive RL steps, from the paper's definitions.

    Step k: loss = -c_H (mean_t H_t - c_s beta(k) mean_t P_t) over the valid tokens, with
    P_t = [kappa_l Href_j - H_t]_+ + [H_t - kappa_r Href_j]_+ for the token's turn j. Href_j is
    the mean over the previous steps in which turn j occurred of that step's mean entropy of
    turn j (this step's mean if it never occurred). beta(k): progress p within the half of K
    epochs; 1 - 0.2 (1 - e^{-2p}) in the first half, 0.8 e^{-3p} in the second.
    Returns per step (loss, mean entropy, mean penalty, beta).
    """
    history = [[] for _ in range(num_turns)]
    half = total_epochs / 2
    out = []
    for k, h in enumerate(entropies):
        valid = mask.astype(bool)
        now = {
            j: h[valid & (turns == j)].mean()
            for j in range(num_turns)
            if (valid & (turns == j)).any()
        }
        ref = {
            j: (np.mean(history[j]) if history[j] else now.get(j, 0.0)) for j in range(num_turns)
        }
        pen = np.array(
            [
                max(kappa_l * ref[j] - x, 0.0) + max(x - kappa_r * ref[j], 0.0)
                for x, j in zip(h[valid], turns[valid], strict=True)
            ]
        )
        if k < half:
            beta = 1 - 0.2 * (1 - np.exp(-2 * min(k / half, 1.0)))
        else:
            beta = 0.8 * np.exp(-3 * min((k - half) / half, 1.0))
        h_mean = h[valid].mean()
        out.append((-c_h * (h_mean - c_s * beta * pen.mean()), h_mean, pen.mean(), beta))
        for j, m in now.items():
            history[j].append(m)
    return out
