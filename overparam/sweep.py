"""Command line: train a sweep and write its results directory.

    python -m overparam.sweep --config=sweeps/du2018.py --config.num_seeds=64 --out=results/du

Flags: --config (an ml_collections config file, fields overridable with
--config.FIELD=value), --out (default results/<config.name>), --device
(cpu|gpu|tpu: fail unless JAX runs on it), --progress. Bad input exits 2 with
one line on stderr and writes nothing.
"""

from __future__ import annotations

import sys

from absl import app, flags
from ml_collections import config_flags

from overparam import config as config_lib

_CONFIG = config_flags.DEFINE_config_file("config", "sweeps/default.py",
                                          "Sweep config file (get_config()).",
                                          lock_config=True)
_OUT = flags.DEFINE_string("out", None, "Results directory (default results/<config.name>).")
_DEVICE = flags.DEFINE_enum("device", None, ["cpu", "gpu", "tpu"],
                            "Fail unless JAX runs on this backend.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar on stderr.")


def fail(message: str) -> None:
    """One line on stderr, exit status 2."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _one_line(e: BaseException) -> str:
    text = str(e).strip().strip('"').strip("'") or type(e).__name__
    return text.splitlines()[0]


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing with one-line errors instead of tracebacks."""
    for arg in argv[1:]:
        if arg.startswith("--config."):
            field = arg[len("--config."):].split("=")[0].split(".")[0]
            if field not in config_lib.DEFAULTS:
                fail(f"config.{field}: unknown field; known fields: "
                     f"{', '.join(config_lib.DEFAULTS)}")
    try:
        return flags.FLAGS(argv)
    except Exception as e:  # noqa: BLE001 - every parse error becomes one line
        fail(_one_line(e))


def main(argv: list[str]) -> None:
    del argv
    from overparam import engine  # imports jax: after flags, so JAX_PLATFORMS is honoured

    try:
        sweep = config_lib.validate(_CONFIG.value)
        out = _OUT.value or f"results/{sweep.name}"
        summary = engine.run_sweep(sweep, out, device=_DEVICE.value,
                                   show_progress=_PROGRESS.value)
    except (config_lib.ConfigError, engine.BackendError) as e:
        fail(_one_line(e))
    t = summary.timings
    print(f"{summary.num_runs} networks x {sweep.steps} steps in {t['total']:.1f} s "
          f"(compile {t['compile']:.1f} s, {summary.num_compiles} programs): "
          f"{summary.throughput:,.0f} network-steps/s; {summary.num_diverged} diverged")
    print(f"results: {summary.out}   load: overparam.load({str(summary.out)!r})")


def run() -> None:
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    run()
