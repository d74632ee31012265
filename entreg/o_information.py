r"""Total correlation, dual total correlation, O-information and S-information from any joint
entropy estimator (Rosas, Mediano, Gastpar & Jensen, "Quantifying high-order interdependencies
via multivariate extensions of the mutual information", PRE 100, 032305, 2019).

For n variables X = (X_1, ..., X_n), X_-j = all but X_j:

    TC    = sum_j H(X_j) - H(X)
    DTC   = H(X) - sum_j H(X_j | X_-j) = sum_j H(X_-j) - (n - 1) H(X)
    Omega = TC - DTC = (n - 2) H(X) + sum_j [H(X_j) - H(X_-j)]
    S     = TC + DTC = sum_j I(X_j; X_-j)

Omega > 0: redundancy-dominated; Omega < 0: synergy-dominated; Omega = 0 identically for n = 2,
and for n = 3 it is the co-information. Oracles (bits): X3 = X1 xor X2 gives Omega = -1, TC = 1;
X1 = X2 = X3 (fair bits) gives Omega = +1, TC = 2.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax

from entreg import _checks


class MultivariateInformation(NamedTuple):
    total_correlation: jax.Array
    dual_total_correlation: jax.Array
    o_information: jax.Array
    s_information: jax.Array


def multivariate_information(
    entropy_of: Callable[[tuple[int, ...]], jax.Array], groups: int | Sequence[Sequence[int]]
) -> MultivariateInformation:
    r"""TC, DTC, O-information and S-information from a joint entropy estimator.

    ``entropy_of(columns)`` returns the joint entropy of the given (sorted) columns, e.g.
    ``lambda c: entreg.kl_entropy(x[:, c])`` (kNN), ``lambda c:
    entreg.gaussian_entropy(cov[np.ix_(c, c)])`` (closed form) or ``lambda c:
    entreg.discrete_entropy(labels[:, c])`` (plug-in). It is called 2n + 1 times: H(X), each
    H(X_j) and each H(X_{-j}). The results are in the estimator's units.

    Args:
      entropy_of: ``columns (tuple of ints) -> entropy`` (any shape; the results broadcast).
      groups: an int n (the columns 0..n-1 are the variables) or a sequence of disjoint index
        sequences, one per (possibly multivariate) variable; n >= 2.

    Returns:
      ``MultivariateInformation(total_correlation, dual_total_correlation, o_information,
      s_information)``.

    References:
      Rosas et al., PRE 100, 032305 (2019).
    """
    if not callable(entropy_of):
        raise TypeError(f"`entropy_of` must be callable, got {type(entropy_of).__name__}.")
    groups = _checks.variable_groups(groups)
    n = len(groups)
    everything = tuple(sorted(i for g in groups for i in g))
    h_all = entropy_of(everything)
    h_each = [entropy_of(tuple(sorted(g))) for g in groups]
    h_rest = [entropy_of(tuple(i for i in everything if i not in g)) for g in groups]
    tc = sum(h_each) - h_all
    dtc = sum(h_rest) - (n - 1) * h_all
    return MultivariateInformation(tc, dtc, tc - dtc, tc + dtc)
