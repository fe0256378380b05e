"""Real images: du and ntk two-layer networks on scikit-learn's digits, test error and
Arora et al.'s complexity measure.

    python -m overparam.sweep --config=sweeps/digits.py --out=results/digits             # GPU
    python -m overparam.sweep --config=sweeps/digits.py:quick --out=results/digits_quick  # CPU

Data (overparam/data.py): the 8x8 digit images, flattened, centered by the mean image and
normalized to the unit sphere (d = 64); two binary tasks with +-1 labels, 0 against 1 (360
images) and even against odd (1,797); n training images drawn per seed, and every other
image of the task (at most 1,000) held out as its test set. Networks: two-layer ReLU
(depth 1), Du et al.'s `du` and the `ntk` parameterization, the first layer trained;
squared loss summed over examples, full-batch GD at lr='theory' (1 / lambda_max of each
training set's H^inf, per parameterization), the metrics every 5 steps.

Full: widths 64 to 4096, n in (32, 64, 128, 256), 8 seeds, 1000 steps: 384 networks;
minutes on one GPU. quick: widths 64, 256 and 1024, n in (32, 64, 128, 256), 3 seeds, 300
steps, 100 test images per training set: 144 networks, a few minutes on a 2-core CPU.

Expected (Arora, Du, Hu, Li & Wang 2019; THEORY.md section 8): the test error falls with
n and barely depends on the width (the kernel regime); even/odd is harder than 0/1, and
its measure sqrt(2 y^T (H^inf)^-1 y / n) is larger; across n and the two tasks, the test
error grows with the measure and stays below it.
"""

from overparam.config import default_config


def get_config(arg=None):
    c = default_config()
    c.name = "digits"
    c.dataset = "digits"
    c.labels = "task"
    c.digits_task = ("0v1", "even_odd")
    c.param = ("du", "ntk")
    c.depths = (1,)
    c.loss = ("squared",)
    c.reduction = "sum"
    c.optimizer = ("gd",)
    c.lr = ("theory",)
    c.widths = (64, 256, 1024, 4096)
    c.n = (32, 64, 128, 256)
    c.num_seeds = 8
    c.steps = 1000
    c.record_every = 5
    c.chunk_steps = 250
    if arg == "quick":
        c.name = "digits_quick"
        c.widths = (64, 256, 1024)
        c.num_seeds = 3
        c.steps = 300
        c.n_test = 100  # one test size for both tasks: half the programs to compile
    elif arg is not None:
        raise ValueError(f"sweeps/digits.py: unknown variant {arg!r}; allowed: quick")
    return c
