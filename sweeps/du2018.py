"""Du, Zhai, Poczos & Singh 2018, section 6: two-layer ReLU, squared loss, GD.

    python -m overparam.sweep --config=sweeps/du2018.py --out=results/du2018          # GPU
    python -m overparam.sweep --config=sweeps/du2018.py:quick --out=results/du_quick  # CPU

Full (the paper's setting): n = 1000 points uniform on the unit sphere in
R^1000, y ~ N(0, 1), only the first layer trained, loss (1/2) sum_i (f_i - y_i)^2,
100 full-batch GD steps, widths 100 to 10^4, 8 seeds. The paper does not state
its step size: eta = 0.25 here. For this data lambda_max(H(0)) is about 1.31
at m = 100 and 1.25 at m = 1000 (lambda_0 = lambda_min(H^inf) about 0.25), so
eta is well below 2 / lambda_max (about 1.5) for every width. About 1.5
PFLOP in all: minutes on one GPU, hours on a 2-core CPU.

quick: n = d = 256 (lambda_0 about 0.24, lambda_max about 1.26), widths 64 to
4096, 16 seeds, 100 steps: about a minute on a 2-core CPU.

Expected (the paper's three panels): wider networks converge faster, flip a
smaller fraction of activation patterns ((1/mn) sum_{i,r} 1{pattern changed}
~ m^-1/2) and move less (max_r ||w_r(k) - w_r(0)|| ~ m^-1/2).
"""

from overparam.config import default_config


def get_config(arg=None):
    c = default_config()
    c.name = "du2018"
    c.dataset = "sphere"
    c.labels = "gaussian"
    c.param = ("du",)
    c.depths = (1,)
    c.loss = ("squared",)
    c.reduction = "sum"
    c.optimizer = ("gd",)
    c.lr = (0.25,)
    c.train_output = False
    c.n = (1000,)
    c.d = 1000
    c.widths = (100, 300, 1000, 3000, 10000)
    c.num_seeds = 8
    c.steps = 100
    c.chunk_steps = 50
    c.gram_every = 10  # NTK Gram statistics every 10 steps (~+20% time)
    if arg == "quick":
        c.name = "du2018_quick"
        c.n = (256,)
        c.d = 256
        c.widths = (64, 256, 1024, 4096)
        c.num_seeds = 16
    elif arg is not None:
        raise ValueError(f"sweeps/du2018.py: unknown variant {arg!r}; allowed: quick")
    return c
