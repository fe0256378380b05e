"""Provenance and the manifest: what ran, where, from which code, and its status.

Owns manifest.json's content: the resolved config, package versions, device,
git commit, command line, plan, the datasets' identities, the schema version,
and at the end the timings, counts and every file's rows and hash. The engine
decides when it is written; `store` writes it atomically. It never reads a table.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax

from overparam import config as config_lib
from overparam import multihost, schema, store
from overparam import plan as plan_lib


def dependencies() -> tuple[str, ...]:
    """The names of overparam's runtime dependencies, as pyproject.toml declares them
    (from the installed package's metadata; none if overparam is not installed)."""
    try:
        requires = importlib.metadata.requires("overparam") or []
    except importlib.metadata.PackageNotFoundError:
        return ()
    return tuple(re.split(r"[\s<>=!~;\[]", r, maxsplit=1)[0] for r in requires
                 if "extra ==" not in r)


def _git() -> dict[str, Any]:
    """{'git_commit': HEAD or None, 'git_dirty': whether the tree has uncommitted changes
    (None outside a git checkout)}."""
    here = Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], check=True,
                                capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain"], check=True,
                               capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return {"git_commit": None, "git_dirty": None}
    return {"git_commit": commit, "git_dirty": bool(dirty)}


def _versions() -> dict[str, str | None]:
    """Python's version and every dependency's (None: not installed)."""
    versions = {"python": platform.python_version()}
    for name in dependencies():
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _device_info() -> dict[str, Any]:
    devices = jax.devices()
    return {"backend": jax.default_backend(), "device_kind": devices[0].device_kind,
            "device_count": len(devices), "process_count": jax.process_count(),
            "host": platform.node(),
            "processor": platform.processor() or platform.machine()}


def new_manifest(sweep: config_lib.Sweep, prepared) -> dict[str, Any]:
    """The manifest of a sweep starting: everything but its files and status.
    prepared: its `prepare.Prepared` (with the plan)."""
    plan: plan_lib.Plan = prepared.plan
    return {"config": sweep.to_dict(), "schema_version": schema.VERSION,
            "versions": _versions(), "device": _device_info(), **_git(),
            "command": shlex.join(sys.argv), "num_runs": len(prepared.runs),
            "plan": plan_lib.describe(plan).splitlines(), "memory_budget_mb": plan.budget_mb,
            "batch_multiple_of": plan.multiple_of, "groups": plan.groups,
            "datasets": {did: {**ident, "separation": prepared.datasets[did].separation}
                         for did, ident in prepared.idents.items()}}


def complete(manifest: dict[str, Any], summary, files: dict, checkpoints: dict) -> None:
    """Marks `manifest` complete: the sweep's timings and counts (summary: the engine's
    Summary), every file's rows and hash, the checkpoints' costs."""
    manifest.update(status="complete", timings=summary.timings, files=files,
                    checkpoints=checkpoints, num_diverged=summary.num_diverged,
                    num_compiles=summary.num_compiles,
                    throughput_network_steps_per_s=summary.throughput,
                    processes=multihost.count())


def manifest_of(out: Path) -> dict:
    """The manifest as the leader wrote it."""
    return json.loads((out / store.MANIFEST).read_text())
