"""The README and the docs pages are true: their tables are generated from the code, their
examples run as written and print what they say they print.

The pages are README.md (the first page, at most 200 lines) and docs/*.md. Conventions of
the pages that this file relies on:

- a ```python block is run (in a directory whose results/default is the default
  sweep, run here once); if the next paragraph is "prints" and a ``` block, that
  block is its output;
- a ```console block holds `$ command` lines, each followed by its output (a line
  `...` stands for any lines). `make sweep` is checked against the default sweep
  run here (the command `make sweep` runs); `python -m overparam.*` commands are
  run; any other command is refused, so that nothing is shown that is not run;
- numbers in outputs agree to 1e-3 relative (another CPU may round differently),
  except on the lines that report times, where any number goes;
- every `make` target, sweep file, flag and config field a command names exists.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from overparam import config as config_lib

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
# Every page a reader is shown: {path relative to the repository: text}.
PAGES = {str(p.relative_to(ROOT)): p.read_text()
         for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}
# The page that holds the table of config fields (`python -m overparam.config`).
FIELDS_PAGE = "docs/sweeps.md"
ENV = {**os.environ, "JAX_PLATFORMS": "cpu"}
# The command `make sweep` runs (Makefile), its progress bar aside.
MAKE_SWEEP = ["-m", "overparam.sweep", "--config=sweeps/default.py", "--device=cpu", "--analyze",
              "--progress=false"]
_NUMBER = re.compile(r"[-+]?(?:\d[\d,]*\.?\d*|\.\d+)(?:e[-+]?\d+)?", re.I)
_TIMING = re.compile(r"\d s\b|network-steps/s|\bs \(compile|seconds")


def _blocks(kind: str) -> list[tuple[str, str, str | None]]:
    """("page:line", code, the output shown after it or None) of every ```kind block of
    every page."""
    found = []
    for page, text in PAGES.items():
        for m in re.finditer(rf"^```{kind}\n(.*?)^```\n", text, re.M | re.S):
            after = text[m.end():]
            shown = re.match(r"\s*prints\s*\n\s*```[a-z]*\n(.*?)^```\n", after, re.M | re.S)
            line = text[:m.start()].count("\n") + 1
            found.append((f"{page}:{line}", m.group(1), shown.group(1) if shown else None))
    return found


def _same_output(got: str, want: str) -> str | None:
    """Why `got` is not the output `want` shows (None if it is)."""
    got_lines = [x.rstrip() for x in got.strip("\n").splitlines()]
    want_lines = [x.rstrip() for x in want.strip("\n").splitlines()]
    if "..." in want_lines:  # `...` stands for any lines
        i = want_lines.index("...")
        head, tail = want_lines[:i], want_lines[i + 1:]
        got_lines = got_lines[:len(head)] + (got_lines[len(got_lines) - len(tail):]
                                             if tail else [])
        want_lines = head + tail
    if len(got_lines) != len(want_lines):
        return f"{len(got_lines)} lines where the page shows {len(want_lines)}:\n{got}"
    for g, w in zip(got_lines, want_lines):
        if _NUMBER.sub("#", g).split() != _NUMBER.sub("#", w).split():
            return f"line\n  {g}\nis not\n  {w}"
        if _TIMING.search(w):
            continue
        for a, b in zip(_NUMBER.findall(g), _NUMBER.findall(w)):
            x, y = float(a.replace(",", "")), float(b.replace(",", ""))
            if abs(x - y) > 1e-3 * max(abs(x), abs(y)) + 2e-3 * (("." in b) or 0):
                return f"{a} where the page shows {b} in\n  {w}"
    return None


@pytest.fixture(scope="module")
def default_sweep(tmp_path_factory):
    """A directory holding results/default (the default sweep, as `make sweep` runs it)
    and sweeps/, and the sweep's stdout."""
    here = tmp_path_factory.mktemp("readme")
    (here / "sweeps").symlink_to(ROOT / "sweeps")
    proc = subprocess.run([sys.executable, *MAKE_SWEEP, f"--out={here / 'results/default'}"],
                          cwd=here, env=ENV, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return here, proc.stdout.replace(str(here / "results/default"), "results/default")


# ------------------------------------------------------------------ generated tables


def _generated(name: str, page: str) -> str:
    """The <!-- name:begin --> ... <!-- name:end --> block of `page`, the only page with one."""
    holding = [p for p, text in PAGES.items() if f"<!-- {name}:begin" in text]
    assert holding == [page], f"the <!-- {name}:begin --> block is in {holding}, not [{page!r}]"
    block = re.search(rf"<!-- {name}:begin[^>]*-->\n(.*?)<!-- {name}:end -->", PAGES[page],
                      re.S)
    assert block, f"{page} lacks its <!-- {name}:begin --> ... <!-- {name}:end --> block"
    return block.group(1)


def test_the_fields_table_is_the_configs():
    assert _generated("config", FIELDS_PAGE) == config_lib.markdown(), (
        f"{FIELDS_PAGE}'s table of fields differs from overparam/config.py: replace the block "
        "with the output of `python -m overparam.config`")


def test_the_readme_is_a_first_page():
    lines = len(README.splitlines())
    assert lines <= 200, f"README.md has {lines} lines: move the reference into docs/"
    for page in PAGES:
        if page != "README.md":
            assert f"]({page})" in README, f"README.md's map of the docs does not link {page}"


def _flags(module: str) -> set[str]:
    """The flags `module` defines (its own, not absl's)."""
    define = "m._define_flags();" if module == "overparam.analyze" else ""  # defined lazily
    code = (f"import sys, {module} as m; from absl import flags; sys.argv = ['x']; {define}"
            f"print(' '.join(f.name for f in flags.FLAGS.get_flags_for_module(m)))")
    return set(subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, check=True,
                              capture_output=True, text=True).stdout.split())


@pytest.mark.slow
@pytest.mark.parametrize("module", ["overparam.sweep", "overparam.analyze"])
def test_every_flag_of_the_command_lines_is_in_the_docs(module):
    names = _flags(module)
    assert names, module
    text = "\n".join(PAGES.values())
    missing = sorted(n for n in names if f"--{n}" not in text)
    assert not missing, f"neither README.md nor docs/ mention {module}'s flags {missing}"


# ------------------------------------------------------------------ commands


def _commands() -> list[str]:
    """Every command line the pages show (console, indented and shell blocks)."""
    text = re.sub(r"\\\n\s*", " ", "\n".join(PAGES.values()))
    lines = re.findall(r"^(?: {4}|\$ )\s*(?:\$ )?((?:make|python -m overparam\.)\S*.*)$", text,
                       re.M)
    lines += re.findall(r"^\$ (.*)$", text, re.M)
    return sorted({re.sub(r"\s+#.*$", "", x).strip() for x in lines} - {""})


@pytest.mark.slow
def test_every_command_names_what_exists():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))
    sweep_flags, analyze_flags = _flags("overparam.sweep"), _flags("overparam.analyze")
    commands = _commands()
    assert any(c.startswith("make sweep") for c in commands), commands
    for command in commands:
        words = shlex.split(command.replace("...", ""))
        if words[0] == "make":
            assert words[1] in targets, command
            args = [a for w in words[2:] if w.startswith("ARGS=") for a in shlex.split(w[5:])]
            config = next((w[7:] for w in words[2:] if w.startswith("CONFIG=")), None)
            module_flags = analyze_flags if words[1] == "analyze" else sweep_flags
        elif words[:2] == ["python", "-m"]:
            args, config = words[3:], None
            module_flags = {"overparam.sweep": sweep_flags,
                            "overparam.analyze": analyze_flags}[words[2]]
        else:
            continue
        for a in args:
            if not a.startswith("--"):
                continue
            name = a[2:].split("=")[0]
            if name.startswith("config."):
                assert name[7:] in config_lib.DEFAULTS, (command, name)
                continue
            if name.startswith("config"):
                config = a.split("=", 1)[1]
                continue
            assert name.removeprefix("no") in module_flags | {"verbosity"}, (command, name)
        if config:
            path, _, arg = config.partition(":")
            assert (ROOT / path).is_file(), command
            code = (f"import runpy; c = runpy.run_path({str(ROOT / path)!r})['get_config']"
                    f"({arg!r} or None); from overparam import config; config.validate(c)")
            subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=ENV, check=True)


@pytest.mark.slow
def test_console_examples_print_what_the_pages_show(default_sweep):
    here, make_sweep_stdout = default_sweep
    blocks = [(page, block) for page, text in PAGES.items()
              for block in re.findall(r"^```console\n(.*?)^```\n", text, re.M | re.S)]
    assert any(page == "README.md" for page, _ in blocks), "README.md shows no console block"
    for page, block in blocks:
        for command, shown in re.findall(r"^\$ (.*)\n((?:(?!\$ ).*\n)*)", block, re.M):
            if command == "make sweep":
                got = make_sweep_stdout
            elif command.startswith("python -m overparam."):
                proc = subprocess.run([sys.executable, *shlex.split(command)[1:]], cwd=here,
                                      env=ENV, capture_output=True, text=True, timeout=600)
                got = proc.stdout + proc.stderr
            else:
                pytest.fail(f"{page} shows `{command}`, which no test runs")
            why = _same_output(got, shown)
            assert why is None, f"{page}: `{command}`: {why}"


# ------------------------------------------------------------------ Python


@pytest.mark.slow
@pytest.mark.parametrize("where, code, shown", _blocks("python"),
                         ids=[b[0] for b in _blocks("python")])
def test_python_examples_run_and_print_what_the_pages_show(default_sweep, where, code, shown):
    here, _ = default_sweep
    proc = subprocess.run([sys.executable, "-c", code], cwd=here, env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{where}:\n{proc.stderr[-3000:]}"
    if shown is not None:
        why = _same_output(proc.stdout, shown)
        assert why is None, f"{where}: {why}"


@pytest.mark.slow
def test_running_it_again_does_nothing(default_sweep):
    here, _ = default_sweep
    out = here / "results/default"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    proc = subprocess.run([sys.executable, *MAKE_SWEEP, f"--out={out}"], cwd=here, env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "already holds this sweep, complete and verified: nothing to do" in proc.stdout
    assert "its analysis is up to date" in proc.stdout
    after = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    assert after == before


@pytest.mark.slow
def test_make_analyze_prints_the_table_make_sweep_printed(default_sweep, tmp_path):
    """`make analyze RESULTS=results/default` is this command (Makefile). Its figures are
    the ones `make sweep` drew (checked here); the command itself is run without them,
    into another directory, to keep the suite short."""
    here, make_sweep_stdout = default_sweep
    assert "make analyze RESULTS=results/default" in README
    assert "--results=$(RESULTS)" in (ROOT / "Makefile").read_text()
    proc = subprocess.run([sys.executable, "-m", "overparam.analyze", "--results=results/default",
                           f"--out={tmp_path}", "--plots=false"], cwd=here, env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = make_sweep_stdout[make_sweep_stdout.index("quantity "):].strip()
    assert table in proc.stdout
    figures = here / "results/default/analysis/figures"
    pngs = sorted(p.stem for p in figures.glob("*.png"))
    assert pngs and pngs == sorted(p.stem for p in figures.glob("*.pdf"))


def test_the_pages_say_nothing_of_issues_or_sessions():
    for word in ("issue", "session"):
        hits = [f"{page}: {x}" for page, text in PAGES.items() for x in text.splitlines()
                if re.search(rf"\b{word}s?\b", x, re.I)]
        assert not hits, hits


@pytest.mark.slow
def test_the_manifest_named_in_the_readme_holds_what_it_says(default_sweep):
    here, _ = default_sweep
    manifest = json.loads((here / "results/default/manifest.json").read_text())
    keys = re.findall(r"`manifest\[\"(\w+)\"\]`", "\n".join(PAGES.values()))
    assert keys, "no page names a manifest key"  # the scan found the one in docs/results.md
    for key in keys:
        assert key in manifest, key
