"""Infinite-width NTK Gram matrices and Du et al.'s predictions, in NumPy float64.

The empirical NTK Gram matrix of a network on the training set X (n, d) is

    H_ij = sum_theta mu_theta df(x_i)/dtheta . df(x_j)/dtheta,

theta the trained parameters: W_1..W_L, and a with train_output (the laws
and multipliers of `overparam.model`), mu_theta the step-size multiplier of
its layer (`model.lr_multipliers`: 1 except under mup), so that H is the
kernel of gradient descent in function space. For every parameterization there is a
scale s (`gram_scale`) such that H(0) / s converges, as the width m grows, to a
deterministic kernel (`gram_inf`), with error O(m^-1/2) (THEORY.md sections
1, 4 and 5).

All the limits are built from one arc-cosine recursion (Cho & Saul 2009;
Jacot et al. 2018, Theorem 1; THEORY.md section 4), for ReLU with
sigma_w^2 = 2, written in the normalization of `du` (S_1 = X X^T):

    k1(S)_ij = sqrt(S_ii S_jj) (sin t + (pi - t) cos t) / (2 pi)
    k0(S)_ij = (pi - t) / (2 pi),    t = arccos(S_ij / sqrt(S_ii S_jj))
    S_1 = X X^T,  S_{l+1} = 2 k1(S_l)                       (forward, l = 1..L)
    P_L = k0(S_L),  P_l = 2 k0(S_l) * P_{l+1}              (backward)
    T_l = P_l * S_l    (layer l's term),   T_out = S_{L+1} / 2 = k1(S_L)

(* is elementwise). T_l is the limit of layer l's share of H under `du`; for
L = 1, T_1 = H^inf and T_out = G^inf of Du et al. 2018 (THEORY.md section 1).

This module owns the theory's formulas (kernels, step sizes, rates, bounds)
and imports nothing else of overparam but config's vocabulary (PARAMS): the
engine, the analysis and the tests call it, never the other way round.
"""

from __future__ import annotations

import numpy as np

from overparam.config import PARAMS


def extreme_eigenvalues(H) -> np.ndarray:
    """[lambda_min, lambda_max] of the symmetric matrix H, in float64.

    NumPy's eigvalsh (LAPACK's divide and conquer) on one BLAS thread
    (overparam/__init__.py): 0.06 s for n = 1000, and it releases the GIL, so
    the engine computes many at once on a thread pool (SciPy's LAPACK wrappers
    hold the GIL: no faster on 2 threads than on one).
    """
    e = np.linalg.eigvalsh(np.asarray(H, np.float64))
    return np.array([e[0], e[-1]])


def _arccos_kernels(S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """k1(S) and k0(S), the degree-1 and degree-0 arc-cosine maps. S: (n, n) PSD."""
    norms = np.sqrt(np.outer(np.diag(S), np.diag(S)))
    t = np.arccos(np.clip(S / norms, -1.0, 1.0))
    k1 = norms * (np.sin(t) + (np.pi - t) * np.cos(t)) / (2 * np.pi)
    k0 = (np.pi - t) / (2 * np.pi)
    return k1, k0


def arccos_layer_terms(X: np.ndarray, depth: int) -> tuple[np.ndarray, np.ndarray]:
    """The terms T_1..T_L and T_out of the module docstring (du normalization).

    X: (n, d) rows of unit norm. Returns T: (depth, n, n), T_l the infinite-width
    limit of hidden layer l's contribution to H under `du`, and T_out: (n, n), the
    limit of the output layer's contribution (Jacot et al. 2018, Theorem 1).
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    X = np.asarray(X, np.float64)
    S = [X @ X.T]
    dots = []
    for _ in range(depth):
        k1, k0 = _arccos_kernels(S[-1])
        dots.append(k0)
        S.append(2.0 * k1)
    P = dots[-1]
    T = [P * S[depth - 1]]
    for layer in range(depth - 2, -1, -1):
        P = 2.0 * dots[layer] * P
        T.append(P * S[layer])
    return np.stack(T[::-1]), S[depth] / 2.0


def du_gram_inf(X: np.ndarray) -> np.ndarray:
    """H^inf_ij = x_i.x_j (pi - arccos(x_i.x_j)) / (2 pi): Du et al. 2018, Assumption 3.1.

    The limit of the first-layer Gram matrix of the two-layer `du` network,
    E_{w ~ N(0, I)}[x_i.x_j 1{w.x_i >= 0, w.x_j >= 0}]; diagonal 1/2.
    X: (n, d) rows of unit norm (the cosine is clipped to [-1, 1]). Returns (n, n).
    """
    X = np.asarray(X, np.float64)
    G = X @ X.T
    _, k0 = _arccos_kernels(G)
    return G * k0


def gram_scale(param: str, width: int, *, depth: int | None = None,
               train_output: bool = False) -> float:
    """The scale s of H(0): H(0) / s converges to `gram_inf` as width -> infinity.

      du, ntk   s = 1: every forward multiplier carries 1/sqrt(fan_in), so
                each layer's share of H is an average over neurons.
      zou       s = m: weights N(0, 2/m) with no multiplier; the backward
                signal df/dh_L = v (entries +-1) is O(1) per neuron, so each
                hidden layer's share is a sum of m O(1) terms (H ~ m).
      standard  s = m for depth >= 2 or train_output: layers 2..L and the output
                layer grow like m (their inputs h_{l-1} have squared norm ~ m);
                the first layer's share stays O(1) (it sees x, of norm 1), so at
                depth 1 without train_output s = 1. Pass `depth` for standard.
      mup       s = 1: the step-size multipliers (m for the input layer, 1/m for
                the output layer) weigh each layer's share to O(1).

    width: m. Raises ValueError for standard without depth.
    """
    if param in ("du", "ntk", "mup"):
        return 1.0
    if param == "zou":
        return float(width)
    if param == "standard":
        if depth is None:
            raise ValueError("gram_scale: param 'standard' needs depth= (s = width, but 1 at "
                             "depth 1 without train_output)")
        return float(width) if depth >= 2 or train_output else 1.0
    raise ValueError(f"unknown param {param!r}; allowed: {', '.join(PARAMS)}")


def gram_inf(X: np.ndarray, *, param: str, depth: int, train_output: bool = False) -> np.ndarray:
    """lim_{m -> inf} H(0) / gram_scale(param, m, ...), the infinite-width NTK Gram matrix.

    With T_l, T_out of the module docstring (du normalization) and d = X.shape[1]:
      du        sum_l T_l (+ T_out).  Depth 1: Du et al.'s H^inf (+ G^inf).
      ntk       (4/d) (sum_l T_l (+ T_out)): THEORY.md section 4 with K0 = x.x'/d,
                Sigma_l = (2/d) S_l, and Theta's last Sigma term (the output
                layer's) only with train_output.
      zou       sum_l T_l, with or without train_output: Sigma_l = (2/m) S_l and
                the backward products are m P_l, so H = m sum_l T_l + O(m^1/2),
                while the output layer adds only S_{L+1} = O(1), gone at s = m.
      standard  depth >= 2 or train_output: (2/d) (sum_{l>=2} T_l (+ T_out));
                the same Sigma and backward products as ntk, without the
                multipliers, so layer l >= 2 and the output carry m/2 times
                ntk's terms, layer 1 only (d/2) times (gone at s = m).
                Depth 1 without train_output: 2 T_1 = 2 H^inf (s = 1).
      mup       T_1 + (1/d) sum_{l>=2} T_l (+ (2/d) T_out): standard's laws for W,
                the output's 1/m^2 variance dividing every backward signal by
                sqrt(2m) against standard's, and the multipliers m (layer 1),
                1 (layers 2..L), 1/m (output): standard's 2 T_1, (2m/d) T_l and
                (2m/d) T_out times m/(2m), 1/(2m) and 1/m.
    X: (n, d) unit rows. Returns (n, n).
    """
    T, T_out = arccos_layer_terms(X, depth)
    out = T_out if train_output else 0.0
    d = np.shape(X)[1]
    if param == "du":
        return T.sum(0) + out
    if param == "ntk":
        return (4.0 / d) * (T.sum(0) + out)
    if param == "zou":
        return T.sum(0)
    if param == "standard":
        if depth == 1 and not train_output:
            return 2.0 * T[0]
        return (2.0 / d) * (T[1:].sum(0) + out)
    if param == "mup":
        return T[0] + (T[1:].sum(0) + 2.0 * out) / d
    raise ValueError(f"unknown param {param!r}; allowed: {', '.join(PARAMS)}")


def lambda_0(H: np.ndarray) -> float:
    """The smallest eigenvalue of a symmetric H: (n, n) (Du et al.'s lambda_0 for H^inf)."""
    return float(extreme_eigenvalues(H)[0])


def stability_limit(lam_max: float, *, scale: float = 1.0, reduction: str = "sum",
                    n: int | None = None) -> float:
    """2 / (s lambda_max): the GD stability limit in function space (THEORY.md section 1).

    Linearized GD on L = (1/2) sum_i (f_i - y_i)^2 maps the residual r to
    (I - eta H) r, stable iff eta < 2 / lambda_max(H) (Arora, Du, Hu, Li & Wang
    2019, section 4; THEORY.md section 1). H = s H^inf with s = `gram_scale`
    (lam_max: lambda_max(H^inf)). With reduction 'mean' the loss is divided by n,
    the map is I - eta H / n, and the limit is 2 n / lambda_max(H).
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"unknown reduction {reduction!r}; allowed: sum, mean")
    if reduction == "mean" and n is None:
        raise ValueError("stability_limit: reduction 'mean' needs n=")
    factor = float(n) if reduction == "mean" else 1.0
    return 2.0 * factor / (scale * float(lam_max))


def theory_step_size(lam_max: float, *, param: str, width: int, depth: int,
                     train_output: bool = False, reduction: str = "sum",
                     n: int | None = None) -> float:
    """The step size of lr='theory': half the stability limit, 1 / lambda_max(s H^inf)
    (x n for the mean reduction), s = gram_scale(param, width, ...).

    Half of 2 / lambda_max leaves a margin for the finite-width fluctuation
    ||H(0) - s H^inf||_2 = O(m^-1/2) and for H(t) drifting from H(0), so one step
    size is stable for every width of a sweep; and with eta lambda_i <= 1 every
    eigendirection of the residual contracts without oscillating, the slowest at
    1 - eta lambda_0. lam_max: lambda_max(gram_inf(X, param, depth, train_output)).
    """
    scale = gram_scale(param, width, depth=depth, train_output=train_output)
    return stability_limit(lam_max, scale=scale, reduction=reduction, n=n) / 2.0


def du_linear_rate(eta: float, lam0: float, k: int | np.ndarray) -> float | np.ndarray:
    """(1 - eta lambda_0 / 2)^k: Du et al. 2018, Theorem 4.1's bound on
    ||y - u(k)||^2 / ||y - u(0)||^2 after k GD steps on the sum loss. k: int or array.
    """
    return np.power(1.0 - eta * lam0 / 2.0, k)


def du_radius_bound(X: np.ndarray, y: np.ndarray, u0: np.ndarray, width: int) -> float:
    """R' = 4 sqrt(n) ||y - u(0)||_2 / (sqrt(m) lambda_0) (Du et al. 2018, R' of
    Lemma 3.3, used in Theorem 4.1): every neuron's move max_r ||w_r(k) - w_r(0)||_2, for all k.

    lambda_0 = lambda_min(H^inf(X)). X: (n, d) unit rows; y, u0: (n,) labels and
    initial outputs; width: m.
    """
    n = np.shape(X)[0]
    residual = np.linalg.norm(np.asarray(y, np.float64) - np.asarray(u0, np.float64))
    return float(4.0 * np.sqrt(n) * residual / (np.sqrt(width) * lambda_0(du_gram_inf(X))))


def arora_bound(H: np.ndarray, y: np.ndarray) -> float:
    """sqrt(2 y^T H^-1 y / n): Arora, Du, Hu, Li & Wang 2019's complexity measure (their
    Theorem 5.1: for Du's two-layer network trained by GD from a small initialization,
    with H = H^inf (`du_gram_inf`) and labels |y_i| <= 1, the population loss of a
    1-Lipschitz loss bounded in [0, 1] is at most this plus O(sqrt(log(n / (lambda_0
    delta)) / n)); THEORY.md section 8).

    H: (n, n) symmetric positive definite, y: (n,). In float64, by a solve of H z = y,
    never an inverse (np.linalg.solve: LU with partial pivoting). NaN where H is singular
    (two parallel points) or y^T H^-1 y comes out negative.
    """
    H, y = np.asarray(H, np.float64), np.asarray(y, np.float64)
    try:
        quad = float(y @ np.linalg.solve(H, y))
    except np.linalg.LinAlgError:
        return float("nan")
    return float(np.sqrt(2.0 * quad / len(y))) if quad >= 0 else float("nan")


def separation(X: np.ndarray, y: np.ndarray) -> float:
    """Zou et al. 2018, Assumption 3.2's phi: min ||x_i - x_j|| over pairs with
    y_i != y_j (inf if there is one class). X: (n, d); y: (n,). overparam.data
    records it for every training set."""
    X, y = np.asarray(X, np.float64), np.asarray(y)
    diff = y[:, None] != y[None, :]
    if not diff.any():
        return float("inf")
    sq = np.sum(X**2, 1)[:, None] + np.sum(X**2, 1)[None, :] - 2 * X @ X.T
    return float(np.sqrt(max(np.min(sq[diff]), 0.0)))


# ------------------------------------------------------------------ the analysis's predictions
#
# What `overparam.analysis` compares its fits with (THEORY.md sections 1, 3, 5 and 6). Each
# `*_exponent` function gives the exponent alpha of a quantity ~ m^alpha in the width m,
# as an interval (lo, hi) (lo == hi for a single value), or None where the theory gives
# none; all take the run's parameterization, lr_scaling and depth (0: several depths), and
# the layer for a per-layer quantity (None: not known).

def width_stable(param: str, lr_scaling: str) -> bool:
    """Whether the step size is the one the parameterization's theory takes, so that training
    has a limit as m grows (THEORY.md sections 3 and 6): a constant lr for du, ntk and mup
    (mup's per-layer multipliers are in the parameterization), lr / m
    (lr_scaling='inverse_width') for zou and standard."""
    return lr_scaling == ("constant" if param in ("du", "ntk", "mup") else "inverse_width")


_HALF = (-0.5, -0.5)
_FLAT = (0.0, 0.0)


def _lazy(param: str, lr_scaling: str) -> bool:
    """The lazy (kernel) regime: a width-stable lr under every parameterization but mup."""
    return param != "mup" and width_stable(param, lr_scaling)


def _rich(param: str, lr_scaling: str) -> bool:
    """The feature-learning limit: mup with its own (constant) lr (THEORY.md section 6)."""
    return param == "mup" and width_stable(param, lr_scaling)


def row_radius_exponent(param: str, *, lr_scaling: str, depth: int,
                        layer: int | None = None):
    """max_t max_r ||w_r(t) - w_r(0)||_2 ~ m^-1/2: Du et al.'s R' (`du_radius_bound`), for
    the two-layer du network (depth 1) with a width-stable lr."""
    return _HALF if param == "du" and depth == 1 and width_stable(param, lr_scaling) else None


def relative_radius_exponent(param: str, *, lr_scaling: str, depth: int,
                             layer: int | None = None):
    """max_t ||W_l(t) - W_l(0)||_2 / ||W_l(0)||_2, every layer (THEORY.md sections 3 and 6):

      du, ntk  ~ m^-1/2 (constant lr): the update is O(1) in spectral norm
               (`spectral_radius_exponent`) while ||W_l(0)||_2 ~ sqrt(m);
      zou      ~ m^-1/2 (lr / m): the update shrinks like m^-1/2, ||W_l(0)||_2 is O(1);
      mup      m^0 (constant lr): ||W_l||_2 and ||Delta W_l||_2 are both of order
               sqrt(fan_out / fan_in) (Yang, Simon & Bernstein 2023).
    None for standard, and for any step size other than the width-stable one."""
    if _rich(param, lr_scaling):
        return _FLAT
    return _HALF if param in ("du", "ntk", "zou") and _lazy(param, lr_scaling) else None


def spectral_radius_exponent(param: str, *, lr_scaling: str, depth: int,
                             layer: int | None = None):
    """max_t ||W_l(t) - W_l(0)||_2 with the width-stable lr (THEORY.md sections 3 and 6): O(1)
    (exponent 0) for du and ntk, whose weights are N(0, 1) with the 1/sqrt(fan_in) in a
    multiplier (the update has rank <= n per step and O(1) norm, as du's first layer
    at depth 1); ~ m^-1/2 for zou (weights N(0, 2/m), lr / m); under mup
    sqrt(fan_out / fan_in) (Yang, Simon & Bernstein 2023): m^1/2 for the input layer
    (fan_in = d), m^0 for the hidden layers (l >= 2), None where the layer is not
    known. None for standard."""
    if _rich(param, lr_scaling):
        return None if layer is None else (0.5, 0.5) if layer == 1 else _FLAT
    if not _lazy(param, lr_scaling):
        return None
    if param in ("du", "ntk"):
        return _FLAT
    return _HALF if param == "zou" else None


def flip_exponent(param: str, *, lr_scaling: str, depth: int,
                  layer: int | None = None):
    """The fraction of flipped ReLU patterns: between m^-1/2 and m^-1/3 in the lazy regime
    (Du et al.; Allen-Zhu, Li & Song); m^0 under mup, whose pre-activations move by O(1)
    (THEORY.md section 6)."""
    if _rich(param, lr_scaling):
        return _FLAT
    return (-0.5, -1 / 3) if _lazy(param, lr_scaling) else None


def gram_change_exponent(param: str, *, lr_scaling: str, depth: int,
                         layer: int | None = None):
    """max_t ||H(t) - H(0)||_2: ~ m^-1/2 where H is O(1) in m (du, ntk: `gram_scale` = 1)
    with a width-stable lr; m^0 under mup (H is O(1) and moves by O(1))."""
    if _rich(param, lr_scaling):
        return _FLAT
    return _HALF if param in ("du", "ntk") and _lazy(param, lr_scaling) else None


def relative_gram_change_exponent(param: str, *, lr_scaling: str, depth: int,
                                  layer: int | None = None):
    """max_t ||H(t) - H(0)||_2 / lambda_min(H(0)), and / ||H(0)||_2: scale-free, so ~ m^-1/2
    for every parameterization in the lazy regime, and m^0 under mup (THEORY.md
    section 6)."""
    if _rich(param, lr_scaling):
        return _FLAT
    return _HALF if _lazy(param, lr_scaling) else None


def linearization_exponent(param: str, *, lr_scaling: str, depth: int,
                           layer: int | None = None):
    """max_t ||g(t) - g_lin(t)|| (the network against its linearized twin), and the
    feature movement max_t ||h_l(t) - h_l(0)|| / ||h_l(0)|| (THEORY.md section 10): ~ m^-1/2
    in the lazy regime (Lee et al. 2019, Theorem 2.1, for ntk; du and zou likewise with a
    width-stable lr), m^0 under mup, whose features move by O(1) (Yang & Hu 2021)."""
    if _rich(param, lr_scaling):
        return _FLAT
    return _HALF if param in ("du", "ntk", "zou") and _lazy(param, lr_scaling) else None


def infinite_width_exponent(param: str, *, lr_scaling: str, depth: int,
                            layer: int | None = None):
    """max_t ||u(t) - u_inf(t)||, the finite-width error of the kernel theory (THEORY.md
    section 9): ~ m^-1/2, as ||H(0) - s H^inf|| and the kernel's change, for du, zou and
    ntk with a width-stable lr (the analytic kernels)."""
    return _HALF if param in ("du", "ntk", "zou") and _lazy(param, lr_scaling) else None


def output_scale_exponent(param: str, *, center_output: bool):
    """Against the output scale alpha: the weights' movement (every radius), the flipped
    fraction and the kernel's change ~ alpha^-1 for the centered model alpha (f - f(0)) on
    loss / alpha^2 (Chizat, Oyallon & Bach 2019, section 2: its function-space dynamics do
    not depend on alpha while its weights move at speed O(1/alpha); THEORY.md section 6).
    The limit of large alpha (lazy); small alpha leaves it. None without center_output, whose
    output alpha f(0) grows with alpha."""
    return (-1.0, -1.0) if center_output else None


def gram_init_error_exponent(param: str, *, lr_scaling: str, depth: int,
                             layer: int | None = None):
    """||H(0) / s - H^inf||_2 ~ m^-1/2 (`gram_inf`): a property of the initialization, for
    every parameterization and step size."""
    return _HALF


def kernel_loss_rate(lr, lam0, *, reduction: str = "sum", n=None) -> np.ndarray:
    """-2 ln(1 - eta lambda_0): the rate at which linearized GD's squared loss falls along the
    slowest eigendirection of H^inf, loss(t) ~ exp(-rate t) (Arora et al. 2019;
    THEORY.md section 1).

    eta = lr for the sum reduction, lr / n for the mean (the map is I - eta H / n, as in
    `stability_limit`). lr, lam0 (lambda_min(H^inf)) and n: scalars or arrays of one shape.
    Returns float64 of that shape, NaN where 1 - eta lambda_0 <= 0 (no contraction).
    """
    if reduction not in ("sum", "mean"):
        raise ValueError(f"unknown reduction {reduction!r}; allowed: sum, mean")
    if reduction == "mean" and n is None:
        raise ValueError("kernel_loss_rate: reduction 'mean' needs n=")
    eta = np.asarray(lr, np.float64) / (np.asarray(n) if reduction == "mean" else 1)
    contraction = 1.0 - eta * np.asarray(lam0, np.float64)
    return -2.0 * np.log(np.where(contraction > 0, contraction, np.nan))
