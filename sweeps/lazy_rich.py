"""Lazy, rich and catapult side by side, measured directly (docs/regimes.md).

    python -m overparam.sweep --config=sweeps/lazy_rich.py --out=results/lazy_rich    # GPU
    python -m overparam.sweep --config=sweeps/lazy_rich.py:quick --out=results/lazy_rich_quick

Three-layer ReLU networks (depth 2) on n = 32 points of the unit sphere in R^16 with
teacher-regression targets, squared loss summed over examples, full-batch GD, the centered
model alpha (f - f(0)) on loss / alpha^2. Crossed: the parameterization (ntk: lazy; mup:
rich), the output scale alpha (1, and 1/4: richer) and the step size around the catapult's
edge 2 / lambda_0, lambda_0 the top eigenvalue of H(0): on these training sets
lambda_max(H^inf) is 1.1-1.2 (ntk) and 1.2-1.4 (mup), so the steps 0.4, 2.6, 5.2 and 13
are eta lambda_0 of about 0.5 (lazy), 3 and 6 (catapult) and 15 (divergent; > 12).

Every quantity of docs/THEORY.md section 10 is on: the linearized twin, the infinite-width
trajectory (ntk's runs; mup has no analytic kernel here), the features (the coordinate
check: steps 0-3, recorded every step), the kernel-target alignment (Gram every 10 steps)
and the sharpness (every 25 steps: the final lambda_max against 2 / eta).

Full: widths 128 to 4096, 8 seeds, 1000 steps, lr also 1.3: 640 networks; minutes on one
GPU. quick: widths 32, 128, 512, 3 seeds, 120 steps: 144 networks, about 5 minutes on a
shared 2-core CPU (the analysis a minute more).

Expected: ntk at eta lambda_0 < 2 is lazy: ||f - f_lin||, ||u - u_inf|| and the feature
movement fall like m^-1/2 and the alignment stays at A(0); mup and the small alpha move
their features by O(1) at every width (exponent 0) and raise the alignment; between 2 and
about 12 the loss first rises (a catapult) and lambda_max ends below 2 / eta; beyond,
training diverges.
"""

from overparam.config import default_config


def get_config(arg=None):
    c = default_config()
    c.name = "lazy_rich"
    c.dataset = "sphere"
    c.labels = "teacher_regression"
    c.teacher_width = 16
    c.d = 16
    c.param = ("ntk", "mup")
    c.depths = (2,)
    c.loss = ("squared",)
    c.reduction = "sum"
    c.optimizer = ("gd",)
    c.lr = (0.4, 1.3, 2.6, 5.2, 13.0)
    c.output_scale = (1.0, 0.25)
    c.center_output = True
    c.widths = (128, 512, 2048, 4096)
    c.n = (32,)
    c.num_seeds = 8
    c.steps = 1000
    c.chunk_steps = 50
    c.gram_every = 10
    c.sharpness_every = 25
    c.linear_twin = True
    c.infinite_width = True
    c.track_features = True
    c.coord_steps = 3
    c.track_alignment = True
    if arg == "quick":
        c.name = "lazy_rich_quick"
        c.widths = (32, 128, 512)
        c.lr = (0.4, 2.6, 5.2, 13.0)
        c.num_seeds = 3
        c.steps = 120
    elif arg is not None:
        raise ValueError(f"sweeps/lazy_rich.py: unknown variant {arg!r}; allowed: quick")
    return c
