"""Every reference to a section of docs/THEORY.md or docs/DESIGN.md resolves; so does every
relative link of README.md and docs/*.md, and every test the guarantees table names.

The code, the README, BENCHMARKS.md, the docs themselves and every generated
report.md cite the docs by section ("THEORY.md section 3"). The accepted
forms, after the name THEORY.md or DESIGN.md (optionally docs/THEORY.md):

    section 3 | sec. 3 | 3 | sections 2, 3 | sections 1, 4 and 5 | sections 6-8
    section "Title" | "Title"          (a heading's title, after "## N. ")

and the bare name, which cites the whole document. Each cited number must be a
"## N." heading of the file, each title one of its headings. A reference that
starts like one of these but does not parse ("sec 9", "section 3.2",
"THEORY.md, section 3", "THEORY.md#anchor", an f-string's "section {n}") is an
error too, so that references cannot rot silently, and so is a path to the
docs other than docs/.

Python files are read through `ast` (every string, with implicit
concatenations joined and f-string fields as "{}") and `tokenize` (comments),
so a reference split over two string literals is read whole.
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import os
import re
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = {"THEORY": ROOT / "docs" / "THEORY.md", "DESIGN": ROOT / "docs" / "DESIGN.md"}

# Scanned for references: (glob, how to read it).
SOURCES = (("overparam/**/*.py", "python"), ("sweeps/*.py", "python"),
           ("benchmarks/*.py", "python"), ("tests/*.py", "python"),
           ("benchmarks/*.sh", "text"), ("README.md", "text"), ("BENCHMARKS.md", "text"),
           ("docs/*.md", "text"), ("Makefile", "text"), ("pyproject.toml", "text"))
THIS_FILE = Path(__file__).resolve()  # its strings are deliberately bad references

_NAME = re.compile(r"(?P<path>[\w./-]*?)(?P<doc>THEORY|DESIGN)\.md(?![\w-])")
_ITEM = r"\d+(?:-\d+)?"
_LIST = rf"{_ITEM}(?:\s*,\s*{_ITEM})*(?:,?\s+and\s+{_ITEM})?"
_END = r"(?=$|[\s)\]};:!?'\"`*]|[.,](?!\w))"  # what may follow a number or a title
_FORM = re.compile(rf"""[`*]{{0,2}}\s+(?:
      (?:sections?|sec\.)\s+(?P<list>{_LIST})
    | (?P<bare>\d+)
    | (?:section\s+)?"(?P<title>[^"\n]+)"
    ){_END}""", re.X | re.I)
# What starts like a section reference; if _FORM does not match there, it is an error.
_SUSPECT = re.compile(r"""\#
    | (?:'s)?[\s,:;(`*'"]*(?:sections?|sec|chapters?|ch|part|para(?:graph)?)\b
    | (?:'s)?[\s,:;(`*'"]*\u00a7
    | \s+[\d"]""", re.X | re.I)
_DOC_PATHS = ("", "docs/", "./docs/", "../docs/")
_HEADING = re.compile(r"^## (?P<num>\d+)\. (?P<title>.+?)\s*$", re.M)


@dataclasses.dataclass(frozen=True)
class Ref:
    """One mention of THEORY.md or DESIGN.md: where, what it says, and what it cites."""

    where: str              # "file:line"
    text: str               # the reference as written, whitespace collapsed
    doc: str                # "THEORY" or "DESIGN"
    sections: tuple[int, ...] = ()
    title: str | None = None
    error: str | None = None  # the form could not be parsed

    @property
    def cites_a_section(self) -> bool:
        return bool(self.sections or self.title)


def _numbers(text: str) -> tuple[int, ...]:
    out = []
    for lo, hi in re.findall(r"(\d+)(?:-(\d+))?", text):
        out += range(int(lo), int(hi or lo) + 1)
    return tuple(out)


def find_references(text: str, where: str = "<text>", first_line: int = 1) -> list[Ref]:
    """Every mention of THEORY.md / DESIGN.md in `text`, parsed (see the module docstring)."""
    refs = []
    for m in _NAME.finditer(text):
        line = first_line + text.count("\n", 0, m.start())
        tail = text[m.end():m.end() + 120]
        form = _FORM.match(tail)
        written = m.group(0) + (form.group(0) if form else tail[:24].split("\n")[0])
        loc = dict(where=f"{where}:{line}", text=" ".join(written.split()), doc=m["doc"])
        if m["path"] not in _DOC_PATHS:
            refs.append(Ref(**loc, error=f"the docs are docs/{m['doc']}.md, not "
                                         f"{m['path']}{m['doc']}.md"))
        elif form and form["title"]:
            refs.append(Ref(**loc, title=" ".join(form["title"].split())))
        elif form:
            refs.append(Ref(**loc, sections=_numbers(form["list"] or form["bare"])))
        elif _SUSPECT.match(tail):
            refs.append(Ref(**loc, error="unparseable section reference; write e.g. "
                                         f"'{m['doc']}.md section 3', 'sections 1, 4 and 5' "
                                         f"or '{m['doc']}.md section \"Title\"'"))
        else:
            refs.append(Ref(**loc))  # the whole document
    return refs


def headings(doc: str) -> dict[int, str]:
    """{N: title} of the "## N. Title" headings of docs/<doc>.md ({} if it is absent)."""
    path = DOCS[doc]
    if not path.is_file():
        return {}
    return {int(m["num"]): m["title"] for m in _HEADING.finditer(path.read_text())}


def _norm(title: str) -> str:
    return " ".join(title.split()).casefold()


def problems(refs: list[Ref]) -> list[str]:
    """One line per reference that does not resolve, naming where it is and why."""
    out = []
    for r in refs:
        path = DOCS[r.doc].relative_to(ROOT)
        found = headings(r.doc)
        if r.error:
            reason = r.error
        elif not DOCS[r.doc].is_file():
            reason = f"{path} does not exist"
        elif r.title is not None:
            titles = {_norm(t) for t in found.values()} | {
                _norm(f"{n}. {t}") for n, t in found.items()}
            reason = None if _norm(r.title) in titles else f"{path} has no heading {r.title!r}"
        else:
            missing = [n for n in r.sections if n not in found]
            reason = (f"{path} has no section {', '.join(map(str, missing))} (it has "
                      f"{', '.join(map(str, sorted(found)))})" if missing else None)
        if reason:
            out.append(f"{r.where}: {r.text!r}: {reason}")
    return out


def python_texts(source: str) -> list[tuple[int, str]]:
    """(first line, text) of every string of a Python file (implicit concatenations
    joined, f-string fields as "{}") and of every comment."""
    tree = ast.parse(source)
    parts_of_fstrings = {id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr)
                         for v in node.values}
    texts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):
            texts.append((node.lineno, "".join(
                v.value if isinstance(v, ast.Constant) else "{}" for v in node.values)))
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and id(node) not in parts_of_fstrings):
            texts.append((node.lineno, node.value))
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            texts.append((tok.start[0], tok.string))
    return texts


def references_in_file(path: Path, kind: str) -> list[Ref]:
    rel = str(path.relative_to(ROOT))
    source = path.read_text()
    if kind == "text":
        return find_references(source, rel)
    refs = [ref for line, text in python_texts(source)
            for ref in find_references(text, rel, first_line=line)]
    return sorted(refs, key=lambda r: int(r.where.rsplit(":", 1)[1]))


def repository_references() -> list[Ref]:
    refs = []
    for pattern, kind in SOURCES:
        for path in sorted(ROOT.glob(pattern)):
            if path.resolve() != THIS_FILE and path.is_file():
                refs += references_in_file(path, kind)
    return refs


# ------------------------------------------------------------------ the docs and the repository

@pytest.mark.parametrize("doc,required", [("THEORY", 8), ("DESIGN", 4)])
def test_docs_number_their_sections_from_1(doc, required):
    text = DOCS[doc].read_text()
    numbers = [int(m["num"]) for m in _HEADING.finditer(text)]
    assert numbers == list(range(1, len(numbers) + 1)), numbers
    assert len(numbers) >= required, numbers
    unnumbered = [h for h in re.findall(r"^## .*$", text, re.M) if not _HEADING.match(h)]
    assert not unnumbered, f"every '## ' heading of {doc}.md is numbered: {unnumbered}"


def test_every_reference_in_the_repository_resolves():
    refs = repository_references()
    assert sum(r.cites_a_section for r in refs) >= 10, refs  # the scan found them
    bad = problems(refs)
    assert not bad, "references to the docs that do not resolve:\n" + "\n".join(bad)


# ------------------------------------------------------------------ a generated report

@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    """report.md of a tiny du sweep (2 widths, 2 seeds, 10 steps) run by the command line."""
    from overparam import analyze

    out = tmp_path_factory.mktemp("docs") / "tiny"
    command = [sys.executable, "-m", "overparam.sweep", "--config=sweeps/default.py",
               "--config.widths=(16,64)", "--config.num_seeds=2", "--config.steps=10",
               "--config.n=(8,)", "--config.d=4", f"--out={out}", "--progress=false"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    options = dict(plots=False, n_boot=50)
    accepted = inspect.signature(analyze.run_analysis).parameters
    analyze.run_analysis(out, out=out / "analysis",
                    **{k: v for k, v in options.items() if k in accepted})
    return out / "analysis" / "report.md"


@pytest.mark.slow
def test_every_reference_in_a_generated_report_resolves(report):
    refs = find_references(report.read_text(), "report.md")
    assert any(r.cites_a_section for r in refs), report.read_text()
    bad = problems(refs)
    assert not bad, "references in the generated report.md that do not resolve:\n" + "\n".join(
        bad)


# ------------------------------------------------------------------ the checker itself

@pytest.mark.parametrize("text,sections,title", [
    ("as THEORY.md section 3 warns", (3,), None),
    ("(THEORY.md sec. 3).", (3,), None),
    ("(THEORY.md 1).", (1,), None),
    ("(THEORY.md sections\n    1, 4 and 5)", (1, 4, 5), None),
    ("Layout (docs/DESIGN.md section 3):", (3,), None),
    ("DESIGN.md sections 2, 3).", (2, 3), None),
    ("THEORY.md sections 6-8 are theory", (6, 7, 8), None),
    ('THEORY.md section "Sharpness and the edge of stability"',
     (), "Sharpness and the edge of stability"),
    ('THEORY.md "Sharpness and the edge of stability".', (), "Sharpness and the edge of stability"),
    ("THEORY.md's exponent of `quantity`", (), None),
    ("The predicted exponent is given where THEORY.md\ngives one", (), None),
    ("see [THEORY.md](docs/THEORY.md).", (), None),
])
def test_the_forms_in_use_parse_and_resolve(text, sections, title):
    refs = find_references(text)
    assert refs and all(r.error is None for r in refs), refs
    assert refs[0].sections == sections and refs[0].title == title, refs[0]
    assert not problems(refs)


@pytest.mark.parametrize("text,reason", [
    ("THEORY.md section 12", "has no section 12"),
    ("THEORY.md sections 1, 4 and 12", "has no section 12"),
    ("DESIGN.md section 12", "has no section 12"),
    ('THEORY.md section "No such heading"', "has no heading"),
    ("THEORY.md sec 9", "unparseable"),
    ("THEORY.md section 3.2", "unparseable"),
    ("THEORY.md section 3a", "unparseable"),
    ("THEORY.md 3b", "unparseable"),
    ("THEORY.md, section 3", "unparseable"),
    ("THEORY.md's section 3", "unparseable"),
    ("THEORY.md section five", "unparseable"),
    ("THEORY.md#3-parameterizations", "unparseable"),
    ("THEORY.md \u00a73", "unparseable"),
    ("THEORY.md section {}", "unparseable"),
    ("/work/shared/THEORY.md section 3", "the docs are docs/THEORY.md"),
])
def test_the_checker_catches_a_bad_reference(text, reason):
    bad = problems(find_references(f"see {text} here", "x.md"))
    assert len(bad) == 1 and reason in bad[0] and bad[0].startswith("x.md:1:"), bad


def test_python_sources_are_read_through_their_strings_and_comments(tmp_path):
    source = ('"""Docstring (THEORY.md\n    section 12)."""\n'
              'x = ("see THEORY.md section "\n     "8")\n'
              'y = f"THEORY.md section {x}"\n'
              'z = 1  # THEORY.md sec 9\n')
    refs = [ref for line, text in python_texts(source)
            for ref in find_references(text, "f.py", first_line=line)]
    found = {(r.where, r.sections, r.error is not None) for r in refs}
    assert found == {("f.py:1", (12,), False), ("f.py:3", (8,), False),
                     ("f.py:5", (), True), ("f.py:6", (), True)}, refs
    assert len(problems(refs)) == 3


SCHEMA_PAGE = "docs/results.md"  # the page holding the columns (`python -m overparam.schema`)


def test_the_results_pages_columns_are_the_schemas():
    from overparam import schema

    holding = [str(p.relative_to(ROOT)) for p in _pages()
               if "<!-- schema:begin" in p.read_text()]
    assert holding == [SCHEMA_PAGE], f"the schema block is in {holding}, not [{SCHEMA_PAGE!r}]"
    text = (ROOT / SCHEMA_PAGE).read_text()
    block = re.search(r"<!-- schema:begin[^>]*-->\n(.*?)<!-- schema:end -->", text, re.S)
    assert block, f"{SCHEMA_PAGE} lacks its <!-- schema:begin --> ... <!-- schema:end --> block"
    assert block.group(1) == schema.markdown(), (
        f"{SCHEMA_PAGE}'s columns differ from overparam/schema.py: replace the block "
        "with the output of `python -m overparam.schema`")


# ------------------------------------------------------------------ links and the guarantees

_FENCED = re.compile(r"^```.*?^```[ \t]*$", re.M | re.S)
_LINK_RE = re.compile(r"!?\[[^\]\n]*\]\(([^)\s]+)\)")
_MD_HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _prose(text: str) -> str:
    """text without its fenced code blocks and inline code spans (lines kept)."""
    text = _FENCED.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return re.sub(r"`[^`\n]*`", "``", text)


def slug(title: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation but '-' and '_' dropped, spaces
    as '-'."""
    return re.sub(r"[^\w\- ]", "", title.replace("`", "").strip().lower()).replace(" ", "-")


def anchors(text: str) -> set[str]:
    """The anchors of a markdown text's headings (a repeated one as GitHub numbers it)."""
    seen: dict[str, int] = {}
    out = set()
    for m in _MD_HEADING.finditer(_FENCED.sub("", text)):
        base = slug(m.group(1))
        out.add(base if base not in seen else f"{base}-{seen[base]}")
        seen[base] = seen.get(base, 0) + 1
    return out


def broken_links(path: Path, text: str | None = None) -> list[str]:
    """'page:line: target: why' for each relative link of a markdown file (or of `text` read
    as if it were that file) that does not resolve: its file must exist, and its #anchor be
    a heading of the markdown file it names."""
    text = path.read_text() if text is None else text
    prose = _prose(text)
    out = []
    for m in _LINK_RE.finditer(prose):
        target = m.group(1)
        if re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:
            continue
        where = f"{path.relative_to(ROOT)}:{prose.count(chr(10), 0, m.start()) + 1}"
        file, _, anchor = target.partition("#")
        dest = (path.parent / file).resolve() if file else path
        if not dest.exists():
            out.append(f"{where}: {target}: no such file")
        elif anchor and (dest.suffix != ".md" or anchor not in anchors(
                text if dest == path else dest.read_text())):
            out.append(f"{where}: {target}: no heading #{anchor} in {dest.name}")
    return out


def test_every_relative_link_of_the_pages_resolves():
    pages = _pages()
    assert len(pages) >= 8, pages
    links = sum(len(_LINK_RE.findall(_prose(p.read_text()))) for p in pages)
    assert links >= 20, links  # the scan found them
    bad = [b for p in pages for b in broken_links(p)]
    assert not bad, "links that do not resolve:\n" + "\n".join(bad)


@pytest.mark.parametrize("text,ok", [
    ("[a](docs/results.md)", True),
    ("[a](docs/operations.md#what-is-guaranteed)", True),
    ("see [How it works](docs/operations.md#how-it-works).", True),
    ("[a](#a-heading-here)", True),
    ("![f](docs/figures/eos_quick/curves_loss.png)", True),
    ("[a](https://example.org/nowhere.md)", True),
    ("`[a](docs/nowhere.md)` in code", True),
    ("```\n[a](docs/nowhere.md)\n```", True),
    ("[a](docs/nowhere.md)", False),
    ("[a](docs/results.md#no-such-heading)", False),
    ("[a](#no-such-heading)", False),
    ("![f](docs/figures/none.png)", False),
    ("[a](BENCHMARKS.md#nothing)", False),
])
def test_the_link_checker_catches_a_broken_link(text, ok):
    """`text` read as a page at the repository's root (README.md's place)."""
    bad = broken_links(ROOT / "README.md", f"# A heading, here\n\n{text}\n")
    assert (not bad) == ok, bad


def test_slugs_are_githubs():
    assert slug("Interruptions, resuming and reproducibility") == (
        "interruptions-resuming-and-reproducibility")
    assert slug("Analytic kernels (`overparam/theory.py`)") == "analytic-kernels-overparamtheorypy"
    assert slug("7. Sharpness and the edge of stability") == "7-sharpness-and-the-edge-of-stability"
    assert anchors("# A\n## A\n```\n# not a heading\n```\n## B\n") == {"a", "a-1", "b"}


GUARANTEES_PAGE = "docs/operations.md"  # its section "What is guaranteed"


def _defined_tests(path: Path) -> set[str]:
    """Names of the functions of a test file (module level and in classes)."""
    tree = ast.parse(path.read_text())
    return {node.name for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


def guaranteed_tests() -> list[tuple[str, str | None]]:
    """(test file, test name or None for the whole file) of every test the guarantees table
    names: `tests/x.py::name`, `tests/x.py`, and `::name` (in the file named before it in
    the same cell)."""
    text = (ROOT / GUARANTEES_PAGE).read_text()
    section = re.search(r"^## What is guaranteed\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert section, f"{GUARANTEES_PAGE} has no section '## What is guaranteed'"
    found = []
    for row in re.findall(r"^\|.*\|\s*$", section.group(1), re.M):
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) < 2 or cells[-1] in ("test", "---"):
            continue
        current = None
        for code in re.findall(r"`([^`]+)`", cells[-1]):
            file, _, name = code.partition("::")
            current = file or current
            assert current, f"{GUARANTEES_PAGE}: `{code}` names no file: {row}"
            found.append((current, name.split("[")[0] or None))
    return found


def test_every_test_the_guarantees_table_names_exists():
    named = guaranteed_tests()
    assert len(named) >= 40, named  # the scan found them
    missing = []
    for file, name in named:
        path = ROOT / file
        if not path.is_file():
            missing.append(f"{file}: no such file")
        elif name and name not in _defined_tests(path):
            missing.append(f"{file}::{name}: no such test")
    assert not missing, (f"{GUARANTEES_PAGE}'s \"What is guaranteed\" names tests that do "
                         "not exist:\n" + "\n".join(missing))


# ------------------------------------------------------------------ the layers of the imports

# Imports DESIGN.md section 4 names as going back up, with its reason: (importer, imported).
BACK_UP = {("store", "initial")}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT / "overparam").with_suffix("")
    parts = [p for p in rel.parts if p != "__init__"]
    # config/ and plan/ are one unit each in the map; analysis's modules are listed one by one
    if parts and parts[0] in ("config", "plan"):
        return parts[0]
    return "/".join(parts) if parts else ""


def _imports(path: Path) -> set[str]:
    """The overparam modules `path` imports, at its top or inside a function, as the map
    names them (config, plan, analysis/x, ...)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:  # relative: within a package
            package = _module_name(path).split("/")[0]
            names.add(package if package in ("config", "plan") else f"analysis/{node.module}")
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("overparam"):
            base = node.module.removeprefix("overparam").lstrip(".").replace(".", "/")
            for alias in node.names:
                full = f"{base}/{alias.name}" if base else alias.name
                names.add(full if (ROOT / "overparam" / f"{full}.py").exists()
                          or (ROOT / "overparam" / full).is_dir() else base)
        elif isinstance(node, ast.Import):
            names |= {a.name.removeprefix("overparam.").replace(".", "/") for a in node.names
                      if a.name.startswith("overparam.")}
    return {n.split("/")[0] if n.split("/")[0] in ("config", "plan") else n for n in names}


def test_the_design_layers_are_the_imports():
    """DESIGN.md section 4's layers: every overparam module is in one, and imports (at its
    top or inside a function) only modules of the layers before it, but for the imports
    the section names as going back up (BACK_UP)."""
    text = (ROOT / "docs" / "DESIGN.md").read_text()
    block = re.search(r"\n((?:    \d+ .*\n(?:       .*\n)*)+)", text).group(1)
    layer = {}
    for number, names in re.findall(r"    (\d+) +((?:.*\n)(?:       .*\n)*)", block):
        for name in re.sub(r"\(.*?\)", "", names).replace("\n", " ").split(","):
            layer[name.strip().removesuffix(".py")] = int(number)
    files = {_module_name(p): p for p in (ROOT / "overparam").rglob("*.py")
             if p.name not in ("__main__.py",) and _module_name(p) not in ("", "analysis")}
    assert set(files) == set(layer), set(files) ^ set(layer)
    for name, path in files.items():
        for imported in _imports(path) - {name, "", "analysis"}:
            if (name, imported) not in BACK_UP:
                assert layer[imported] < layer[name], (name, imported)
    assert ("store", "initial") in {(n, i) for n, p in files.items() for i in _imports(p)}
