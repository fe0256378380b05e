"""Progressive sharpening and the edge of stability at small width, a flat sharpness at large.

    python -m overparam.sweep --config=sweeps/eos.py --out=results/eos             # GPU
    python -m overparam.sweep --config=sweeps/eos.py:quick --out=results/eos_quick  # CPU

Three-layer ReLU networks (depth 2) in the `ntk` parameterization on n = 32
points of the unit sphere in R^16 with teacher-regression targets, squared loss
summed over examples, full-batch GD at several step sizes eta, the sharpness
(the loss Hessian's top eigenvalue, by 20 warm-started Lanczos steps on
Hessian-vector products) every 5 steps (docs/THEORY.md section 7).

Full: widths 16 to 4096, eta in (0.3, 0.6, 0.9, 1.2), 8 seeds, 1000 steps: 160
networks; minutes on one GPU. quick: widths 16, 64 and 256, eta in (0.6, 0.9,
1.2), 3 seeds, 200 steps: 27 networks, about 30 s on a 2-core CPU with the
analysis.

Expected (Cohen et al. 2021; Lewkowycz et al. 2020): at width 16 the sharpness
rises during training until it reaches 2 / eta, GD's stability limit, and
hovers there (eta x sharpness / 2 ~ 1; where it starts above, a catapult
brings it down first); the wider a network, the less it sharpens, and at
width 256 and more it stays at its initial value, well below 2 / eta: the
lazy regime, where the kernel, and with it the Hessian's top, barely moves.
"""

from overparam.config import default_config


def get_config(arg=None):
    c = default_config()
    c.name = "eos"
    c.dataset = "sphere"
    c.labels = "teacher_regression"
    c.teacher_width = 16
    c.d = 16
    c.param = ("ntk",)
    c.depths = (2,)
    c.loss = ("squared",)
    c.reduction = "sum"
    c.optimizer = ("gd",)
    c.lr = (0.3, 0.6, 0.9, 1.2)
    c.widths = (16, 64, 256, 1024, 4096)
    c.n = (32,)
    c.num_seeds = 8
    c.steps = 1000
    c.chunk_steps = 100
    c.sharpness_every = 5
    if arg == "quick":
        c.name = "eos_quick"
        c.widths = (16, 64, 256)
        c.lr = (0.6, 0.9, 1.2)
        c.num_seeds = 3
        c.steps = 200
    elif arg is not None:
        raise ValueError(f"sweeps/eos.py: unknown variant {arg!r}; allowed: quick")
    return c
