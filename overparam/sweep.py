"""Command line: train a sweep and write its results directory.

    python -m overparam.sweep --config=sweeps/du2018.py --config.num_seeds=64 --out=results/du

Flags: --config (an ml_collections config file, fields overridable with
--config.FIELD=value), --out (default results/<config.name>), --device
(cpu|gpu|tpu: fail unless JAX runs on it), --progress, --overwrite, --dry_run,
--multihost (with --coordinator_address, --num_processes, --process_id where
the cluster is not detected: one process of a multi-process sweep).
A flag given twice, an argument that is not a flag and an empty --out are
refused, never merged or ignored. Bad input exits 2 with one line on stderr
and writes nothing; so does a second sweep on an --out that a running one
holds, and a fault during a run (a full disk), which leaves the sweep
resumable. Re-running the same command
after a crash or an interrupt resumes the sweep; on a finished sweep it
verifies the files and does nothing. SIGINT/SIGTERM stop cleanly (at the next
chunk boundary once training has started, which the first Ctrl-C says at once)
with exit 128 + signal number; a second Ctrl-C stops at once, leaving the sweep
resumable (the chunks it cut short are recomputed).
"""

from __future__ import annotations

if __name__ == "__main__":  # before the slow imports: Ctrl-C from here on is a clean stop
    from overparam import interrupt

    interrupt.install()

import os
import shlex
import signal
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from overparam import config as config_lib
from overparam.cli import fail, one_line

DEFAULT_CONFIG = "sweeps/default.py"
_CONFIG = config_flags.DEFINE_config_file("config", None,
                                          f"Sweep config file (get_config()); default "
                                          f"{DEFAULT_CONFIG} when run from the repository.",
                                          lock_config=True)
_OUT = flags.DEFINE_string("out", None, "Results directory (default results/<config.name>).")
_DEVICE = flags.DEFINE_enum("device", None, ["cpu", "gpu", "tpu"],
                            "Fail unless JAX runs on this backend.")
_PROGRESS = flags.DEFINE_bool("progress", True, "Show a progress bar on stderr.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace the sweep in --out.")
_DRY_RUN = flags.DEFINE_bool("dry_run", False, "Print the plan and stop.")
_ANALYZE = flags.DEFINE_bool("analyze", False, "Afterwards, fit the scaling laws "
                             "(overparam.analyze) and print the fitted exponents.")
_MULTIHOST = flags.DEFINE_bool(
    "multihost", False, "One process of a sweep spread over several processes or hosts "
    "(jax.distributed); every process runs the same command, --out on a shared file system.")
_COORDINATOR = flags.DEFINE_string(
    "coordinator_address", None, "With --multihost: host:port of process 0 (default: "
    "detected on Slurm, TPU pods and other clusters JAX knows).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "With --multihost: how many "
                                      "processes (default: detected).", lower_bound=1)
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "With --multihost: this process's "
                                   "index, 0 to num_processes - 1 (default: detected).",
                                   lower_bound=0)
_CACHE = flags.DEFINE_string(
    "compilation_cache", os.environ.get("OVERPARAM_COMPILATION_CACHE", "~/.cache/overparam/xla"),
    "Persistent XLA compilation cache directory ('' turns it off).")


def _overridden_fields(argv: list[str]) -> list[str]:
    return [a[len("--config."):].split("=")[0].split(".")[0]
            for a in argv if a.startswith("--config.")]


def _flag_name(arg: str) -> str | None:
    """The flag a command-line argument sets (--noprogress: progress, -v: verbosity,
    --config.widths=...: config.widths), or None for a value or an unknown name (which
    absl refuses)."""
    if not arg.startswith("-") or arg in ("-", "--"):
        return None
    name = arg.lstrip("-").split("=", 1)[0]
    if name.startswith("config."):
        return name
    if name in flags.FLAGS:
        return flags.FLAGS[name].name
    if name.startswith("no") and name[2:] in flags.FLAGS and flags.FLAGS[name[2:]].boolean:
        return flags.FLAGS[name[2:]].name
    return None


def _refuse_repeated(argv: list[str]) -> None:
    """A flag given twice is refused, not merged: absl keeps the last value of a flag but
    ml_collections appends a repeated tuple override to the first (--config.widths=(16,)
    --config.widths=(32,64) trained 16, 32 and 64)."""
    names = [_flag_name(a) for a in argv[1:argv.index("--") if "--" in argv else len(argv)]]
    for name in names:
        if name is not None and names.count(name) > 1:
            fail(f"--{name}: given {names.count(name)} times; give each flag once")


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing with one-line errors instead of tracebacks. Refused: a repeated
    flag, an argument that is not a flag, an empty --out."""
    _refuse_repeated(argv)
    fields = _overridden_fields(argv)
    for field in fields:
        if field not in config_lib.DEFAULTS:
            fail(f"config.{field}: unknown field; known fields: "
                 f"{', '.join(config_lib.DEFAULTS)}")
    paths = [a.split("=", 1)[1] for a in argv if a.startswith("--config=")]
    if not paths:
        if not os.path.isfile(DEFAULT_CONFIG):
            fail(f"--config: required here (no {DEFAULT_CONFIG}), e.g. --config=path/to/sweep.py")
        paths = [DEFAULT_CONFIG]
        argv = [argv[0], f"--config={DEFAULT_CONFIG}", *argv[1:]]
    path = paths[-1].split(":", 1)[0]
    if not os.path.isfile(path):
        fail(f"--config: no such file {path!r}")
    try:
        rest = flags.FLAGS(argv)
        _CONFIG.value  # noqa: B018 - loads the file now, so load errors surface here
    except Exception as e:  # noqa: BLE001 - every parse error becomes one line
        missing = [f for f in fields if repr(f) in str(e) or f"'{f}'" in str(e)]
        if missing and "Could not override" not in str(e):
            fail(f"config.{missing[0]}: {path} does not define this field, so it cannot be "
                 "overridden; start the file from overparam.config.default_config()")
        fail(f"--config={paths[-1]}: {_reason(e)}")
    if len(rest) > 1:
        fail(f"unexpected argument {rest[1]!r}; give flags as --name=value, e.g. "
             "--config.widths='(64,256)'")
    if _OUT.value is not None and not _OUT.value.strip():
        fail("--out: empty; give a directory, or leave --out out for results/<config.name>")
    if not hasattr(_CONFIG.value, "items"):
        fail(f"--config={paths[-1]}: get_config() returned {type(_CONFIG.value).__name__}, "
             "not a ConfigDict")
    return rest


def _reason(e: Exception) -> str:
    """The cause of a config file's load error: ml_collections puts the file's whole
    traceback in the message, whose last line says what went wrong."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    if len(lines) > 1 and "Traceback" in str(e):
        return lines[-1]
    return one_line(e)


def resume_command() -> str:
    """This command line, as it can be pasted into a shell."""
    return shlex.join([sys.executable, "-m", "overparam.sweep", *sys.argv[1:]])


def _join_processes() -> None:
    """jax.distributed.initialize for --multihost (before JAX starts its backend)."""
    from overparam import multihost

    given = {f.name: f.value for f in (_COORDINATOR, _NUM_PROCESSES, _PROCESS_ID)
             if f.value is not None}
    if not _MULTIHOST.value:
        if given:
            fail(f"--{next(iter(given))}: only means something with --multihost")
        return
    n, i = _NUM_PROCESSES.value, _PROCESS_ID.value
    if n is not None and i is not None and i >= n:
        fail(f"--process_id: {i} is not below --num_processes={n}")
    try:
        multihost.initialize(_COORDINATOR.value, n, i)
    except Exception as e:  # noqa: BLE001 - JAX raises ValueError or RuntimeError here
        fail(f"--multihost: could not join the other processes ({one_line(e)})")


def _quiet_logging() -> None:
    """absl logs every INFO record to stderr by default, JAX's search for backends that
    are not there included ("Unable to initialize backend 'tpu'"): warnings and errors
    only, unless --verbosity is given."""
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


def main(argv: list[str]) -> None:
    del argv
    _quiet_logging()
    try:  # before JAX and pandas are imported: a mistyped field costs no start-up
        sweep = config_lib.validate(_CONFIG.value)
    except config_lib.ConfigError as e:
        fail(one_line(e))
    from overparam import store

    store.crash_point("import")
    from overparam import engine, multihost, programs, resultsdir  # import jax after flags

    if _CACHE.value:
        try:
            programs.enable_compilation_cache(_CACHE.value)
        except OSError as e:
            fail(f"--compilation_cache: cannot use {_CACHE.value!r} as a directory "
                 f"({e.strerror or type(e).__name__})")
    _join_processes()
    try:
        out = _OUT.value or f"results/{sweep.name}"
        summary = engine.run_sweep(sweep, out, device=_DEVICE.value,
                                   show_progress=_PROGRESS.value, overwrite=_OVERWRITE.value,
                                   dry_run=_DRY_RUN.value)
    except (config_lib.ConfigError, resultsdir.OutError, programs.BackendError) as e:
        fail(one_line(e))
    except store.WriteError as e:
        fail(f"{e}; nothing written is lost: free space (or fix the file system) and run "
             f"the same command to resume: {resume_command()}")
    if summary is not None and multihost.is_leader():
        t = summary.timings
        print(f"{summary.num_runs} networks x {sweep.steps} steps in {t['total']:.1f} s "
              f"(compile {t['compile']:.1f} s, {summary.num_compiles} programs): "
              f"{summary.throughput:,.0f} network-steps/s; {summary.num_diverged} diverged")
        print(f"results: {summary.out}   load: overparam.load({str(summary.out)!r})")
    if _ANALYZE.value and not _DRY_RUN.value and multihost.is_leader():
        from pathlib import Path

        from overparam import analyze

        report = Path(out) / "analysis" / "report.md"
        if summary is None and report.is_file() and (
                report.stat().st_mtime >= (Path(out) / store.MANIFEST).stat().st_mtime):
            print(f"its analysis is up to date: {report} (make analyze RESULTS={out} "
                  "redoes it)")
            return
        try:  # a signal: the analysis directory is left as it was (overparam.analyze)
            fits = analyze.run_analysis(out)
        except (store.ResultsError, analyze.OutputError, OSError) as e:
            fail(f"the analysis: {one_line(e)}")
        print(f"\nfitted exponents ({out}/analysis/report.md):")
        print(analyze.format_table(fits))


def run() -> None:
    from overparam import interrupt

    try:
        app.run(main, flags_parser=parse_flags)
    except (interrupt.Interrupted, KeyboardInterrupt) as e:
        signum, now = getattr(e, "signum", signal.SIGINT), getattr(e, "now", False)
        how = ("stopped now, the chunks in progress will be recomputed" if now else
               "stopped cleanly, nothing written is lost")
        print(f"\ninterrupted by {signal.Signals(signum).name}: {how}; resume with the same "
              f"command:\n  {resume_command()}", file=sys.stderr)
        if now:  # not waiting for the writer thread, whose chunk a resume recomputes
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(128 + signum)
        sys.exit(128 + signum)


if __name__ == "__main__":
    run()
