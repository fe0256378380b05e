"""Convolutional and residual networks on digits: radius and flips against the channels.

    python -m overparam.sweep --config=sweeps/cnn_digits.py --out=results/cnn_digits  # GPU
    python -m overparam.sweep --config=sweeps/cnn_digits.py:quick \
        --out=results/cnn_digits_quick  # CPU

Data: scikit-learn's digits, 0 against 1 (overparam/data.py: 8x8 images, centered, on the
unit sphere), n training images per seed, 100 held out. Networks (overparam/modules.py):
`cnn`, 3x3 ReLU convolutions of `width` channels, global average pooling and a linear
readout; `resnet`, Du, Lee, Li, Wang & Zhai 2019's convolutional ResNet, whose residual
branches are scaled by 1/L. Both in the ntk parameterization (weights N(0, 1) behind
multipliers sqrt(2 / fan_in), fan_in = 9 c_in), squared loss summed over examples,
full-batch GD at eta = 0.5, the metrics every 2 steps: the radii of each kernel as a
matrix and the convolution's operator norm, and the flips of every (example, position,
channel) pre-activation.

Full: widths 16 to 256 channels, depth 3, n = 128, 8 seeds, 500 steps, the Gram matrix
every 50 steps: 80 networks; minutes on one GPU. quick: widths 8 to 64, depth 2, n = 32,
3 seeds, 100 steps: 24 networks, under a minute on a 2-core CPU with the analysis.

Expected (THEORY.md section 9: the MLP's lazy regime, the channels as the width): the
spectral radius of each kernel and the operator norm of each convolution flat in the
width; the relative radius falling like width^-1/2; the flipped fraction falling, like
width^-1/2 to width^-1/3 once the width is large enough.
"""

from overparam.config import default_config


def get_config(arg=None):
    c = default_config()
    c.name = "cnn_digits"
    c.dataset = "digits"
    c.labels = "task"
    c.digits_task = ("0v1",)
    c.arch = ("cnn", "resnet")
    c.param = ("ntk",)
    c.depths = (3,)
    c.loss = ("squared",)
    c.reduction = "sum"
    c.optimizer = ("gd",)
    c.lr = (0.5,)
    c.widths = (16, 32, 64, 128, 256)
    c.n = (128,)
    c.n_test = 100
    c.num_seeds = 8
    c.steps = 500
    c.record_every = 2
    c.chunk_steps = 100
    c.gram_every = 50
    if arg == "quick":
        c.name = "cnn_digits_quick"
        c.widths = (8, 16, 32, 64)
        c.depths = (2,)
        c.n = (32,)
        c.num_seeds = 3
        c.steps = 100
        c.gram_every = 0
    elif arg is not None:
        raise ValueError(f"sweeps/cnn_digits.py: unknown variant {arg!r}; allowed: quick")
    return c
