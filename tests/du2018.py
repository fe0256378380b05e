"""Du et al. 2018's closed forms that only the tests use, built on overparam.theory: the
output layer's kernel G^inf, the GD stability limit of an H, and lr='theory' of the
two-layer du network (THEORY.md sections 1 and 4). Moved here from theory.py, which
holds what the engine and the analysis use."""

import numpy as np

from overparam import theory


def du_output_gram_inf(X: np.ndarray) -> np.ndarray:
    """G^inf_ij = (sin t + (pi - t) cos t) / (2 pi), t = arccos(x_i.x_j) (THEORY.md section 1).

    The limit of the output layer's Gram matrix under `du`: df/da_r = relu(w_r.x)
    / sqrt(m), so G_ij = (1/m) sum_r relu(w_r.x_i) relu(w_r.x_j) ->
    E[relu(w.x_i) relu(w.x_j)], the degree-1 arc-cosine kernel (Cho & Saul 2009,
    scaled by 1/2); diagonal 1/2. X: (n, d) unit rows. Returns (n, n).
    """
    return theory.arccos_layer_terms(X, 1)[1]  # T_out = k1(X X^T) at depth 1


def du_max_step_size(H: np.ndarray, *, reduction: str = "sum") -> float:
    """2 / lambda_max(H) (x n for the mean reduction): `theory.stability_limit` of H: (n, n)."""
    return theory.stability_limit(theory.extreme_eigenvalues(H)[-1], reduction=reduction,
                                  n=np.shape(H)[0])


def du_theory_lr(X: np.ndarray, *, train_output: bool = False, reduction: str = "sum") -> float:
    """`theory.theory_step_size` for `du`, depth 1 (Du et al. 2018): 1 / lambda_max(H^inf)
    (+ G^inf with train_output), from X: (n, d) unit rows."""
    H = theory.gram_inf(X, param="du", depth=1, train_output=train_output)
    return theory.theory_step_size(theory.extreme_eigenvalues(H)[-1], param="du", width=1,
                                   depth=1, train_output=train_output, reduction=reduction,
                                   n=np.shape(X)[0])
