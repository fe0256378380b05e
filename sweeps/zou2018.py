"""Zou, Cao, Zhou & Gu 2018: deep ReLU networks, classification losses, GD and SGD.

    python -m overparam.sweep --config=sweeps/zou2018.py --out=results/zou2018          # GPU
    python -m overparam.sweep --config=sweeps/zou2018.py:quick --out=results/zou_quick  # CPU

Data (Zou et al., Assumptions 3.1-3.2): unit-norm points whose last coordinate
is mu = 0.5 (a bias), random +-1 labels, any two points of different classes
at distance >= phi = 0.2 (enforced while drawing, measured and recorded).
Network: `zou` parameterization (W_l ~ N(0, 2/m), output v half +1, half -1,
fixed), depths 2 to 4. Losses: hinge and logistic (mean over examples). GD and
minibatch SGD with batch sizes 8 and 32. Step size eta = lr / m
(lr_scaling='inverse_width', the width-stable choice), lr = 4.

Full: widths 128 to 4096 (32x), depths (2, 3, 4), n = (64, 128), 8 seeds,
500 steps: 1,152 networks in 144 shapes; tens of minutes on one GPU.
quick: widths 32 to 1024 (32x), depths (2, 3), n = 32, logistic loss, GD and
SGD (batch 8), 4 seeds, 300 steps: 48 networks in 12 shapes, a few minutes
on a 2-core CPU.

Expected: zero training error for every width once m is large enough;
max_t ||W_l(t) - W_l(0)||_2 ~ m^-1/2 in every layer; the number of steps to
zero training error roughly independent of m, growing with n and depth.
"""

from overparam.config import default_config


def get_config(arg=None):
    c = default_config()
    c.name = "zou2018"
    c.dataset = "zou"
    c.mu = 0.5
    c.labels = "random_sign"
    c.phi = 0.2
    c.param = ("zou",)
    c.loss = ("hinge", "logistic")
    c.reduction = "mean"
    c.optimizer = ("gd", "sgd")
    c.batch_size = (8, 32)
    c.lr = (4.0,)
    c.lr_scaling = "inverse_width"
    c.d = 16
    c.n = (64, 128)
    c.widths = (128, 512, 2048, 4096)
    c.depths = (2, 3, 4)
    c.num_seeds = 8
    c.steps = 500
    c.chunk_steps = 100
    if arg == "quick":
        c.name = "zou2018_quick"
        c.loss = ("logistic",)
        c.batch_size = (8,)
        c.n = (32,)
        c.widths = (32, 128, 1024)
        c.depths = (2, 3)
        c.num_seeds = 4
        c.steps = 300
    elif arg is not None:
        raise ValueError(f"sweeps/zou2018.py: unknown variant {arg!r}; allowed: quick")
    return c
