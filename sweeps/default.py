"""Default sweep: Du et al. (2018) two-layer setting, widths 256 to 16384 (64x).

    make sweep        # or: python -m overparam.sweep --config=sweeps/default.py

n = 64 points uniform on the unit sphere in R^16, Gaussian targets, squared
loss summed over examples (Du et al., eq. 2), full-batch GD with eta = 0.1,
first layer trained, 16 seeds per width, 200 steps, every metric every step
and the NTK Gram statistics every 10 steps: 64 networks. Runtime: about half
a minute on a 2-core CPU with `make sweep`'s analysis, seconds on a GPU.

Expected: loss falls linearly (log-loss slope ~ 2 log(1 - eta lambda_0));
max row radius, relative spectral radius and final flip fraction fall like
m^-1/2 (THEORY.md section 5); the absolute spectral radius of the first layer
stays flat in m (rank <= n updates).
"""

from overparam.config import default_config


def get_config(arg=None):
    del arg
    c = default_config()
    c.name = "default"
    c.widths = (256, 1024, 4096, 16384)
    c.depths = (1,)
    c.num_seeds = 16
    c.seed = 0
    c.n = (64,)
    c.d = 16
    c.dataset = "sphere"
    c.labels = "gaussian"
    c.loss = ("squared",)
    c.reduction = "sum"
    c.optimizer = ("gd",)
    c.lr = (0.1,)
    c.param = ("du",)
    c.train_output = False
    c.steps = 200
    c.record_every = 1
    c.chunk_steps = 100
    c.precision = "highest"
    c.dtype = "float32"
    c.gram_every = 10  # NTK Gram statistics every 10 steps (~+20% time)
    return c
