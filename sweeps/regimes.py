"""Lazy against rich: ntk and mup side by side over widths and output scales.

    python -m overparam.sweep --config=sweeps/regimes.py --out=results/regimes             # GPU
    python -m overparam.sweep --config=sweeps/regimes.py:quick --out=results/regimes_quick  # CPU

Three-layer ReLU networks (depth 2) on n points of the unit sphere in R^16 with
teacher-regression targets (a random two-layer ReLU teacher of width 16, unit
variance), squared loss summed over examples, full-batch GD with eta = 0.1,
the Gram matrix every 20 steps. Two parameterizations (docs/THEORY.md sections 3
and 6): `ntk` (lazy: its kernel limit is fixed) and `mup` (Yang & Hu 2021's
maximal update parameterization: per-layer step sizes eta m, eta, eta / m).
Both train the centered model alpha (f - f(0)) on loss / alpha^2 (Chizat, Oyallon
& Bach 2019) for three output scales alpha.

Full: widths 128 to 8192 (64x), alpha in (1, 4, 16, 64), n = 64, 16 seeds, 1000
steps: 512 networks; minutes on one GPU. quick: widths 64 to 1024 (16x),
alpha in (1, 4, 16), n = 32, 4 seeds, 300 steps: 72 networks, about 50 s on a
2-core CPU (the analysis as long again).

Expected: against the width, ntk's relative spectral radius, flipped fraction
and relative kernel change fall like m^-1/2 (its absolute spectral radius is
flat), while mup's stay flat (exponent 0): mup keeps learning features at
every width. Against alpha, ntk's radius, flips and kernel change fall like
alpha^-1 (the lazy limit); mup's fall more slowly at these scales.
"""

from overparam.config import default_config


def get_config(arg=None):
    c = default_config()
    c.name = "regimes"
    c.dataset = "sphere"
    c.labels = "teacher_regression"
    c.teacher_width = 16
    c.d = 16
    c.param = ("ntk", "mup")
    c.depths = (2,)
    c.loss = ("squared",)
    c.reduction = "sum"
    c.optimizer = ("gd",)
    c.lr = (0.1,)
    c.output_scale = (1.0, 4.0, 16.0, 64.0)
    c.center_output = True
    c.widths = (128, 512, 2048, 8192)
    c.n = (64,)
    c.num_seeds = 16
    c.steps = 1000
    c.chunk_steps = 100
    c.gram_every = 20
    if arg == "quick":
        c.name = "regimes_quick"
        c.widths = (64, 256, 1024)
        c.output_scale = (1.0, 4.0, 16.0)
        c.n = (32,)
        c.num_seeds = 4
        c.steps = 300
    elif arg is not None:
        raise ValueError(f"sweeps/regimes.py: unknown variant {arg!r}; allowed: quick")
    return c
