"""Reading lowered StableHLO text (`jax.jit(f).trace(...).lower(...).as_text()`) for tests.

Shared by tests/test_lowering.py and tests/test_precision.py: the ops of a program, its
custom-call targets, its while loops and whether each has a fixed trip count, and the
named scope of each matmul.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

_WHILE = re.compile(r"stablehlo\.while\((?P<args>[^)]*)\)")
_ARG = re.compile(r"(%iterArg\w*) = (%[\w#]+)")
_CONSTANT = r"{name} = stablehlo\.constant dense<(-?\d+)> : tensor<[su]?i\d+>"


def ops(text: str, name: str) -> int:
    """How many `stablehlo.<name>` ops the text holds."""
    return len(re.findall(rf"stablehlo\.{name}\b", text))


def has_float64(text: str) -> bool:
    """Whether a float64 type (f64: a scalar, an element of a tensor or complex) occurs."""
    return re.search(r"(?:^|[<x\s(,:])f64\b", text, re.M) is not None


def custom_calls(text: str) -> set[str]:
    """The targets of every custom call."""
    return set(re.findall(r"custom_call @([\w.\-]+)", text))


def _block(lines: list[str], start: int) -> tuple[list[str], int]:
    """The lines of the region opened on line `start` (ending in '{') up to its closing
    brace, found by the printer's indentation; and the index of the closing line."""
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = start + 1
    while not (lines[end].startswith(" " * indent + "}")
               and len(lines[end]) - len(lines[end].lstrip()) == indent):
        end += 1
    return lines[start + 1:end], end


def _defines(text: str, value: str, pattern: str) -> re.Match | None:
    return re.search(pattern.format(name=re.escape(value)), text)


def functions(text: str) -> dict[str, list[str]]:
    """The lines of each function's body, by name (main, and the private functions that
    JAX lowers some jaxprs into)."""
    out: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        head = re.match(r"\s*func\.func (?:public|private) @([\w.\-]+)\(", line)
        if head:
            current = head.group(1)
            out[current] = []
        elif current is not None:
            out[current].append(line)
    return out


def _callers(funcs: dict[str, list[str]]) -> dict[str, list[tuple[str, str]]]:
    """callee -> [(caller, the call's line)]."""
    callers: dict[str, list[tuple[str, str]]] = {}
    for caller, body in funcs.items():
        for line in body:
            call = re.search(r"(?:^|[\s=])(?:func\.)?call @([\w.\-]+)\(", line)
            if call:
                callers.setdefault(call.group(1), []).append((caller, line))
    return callers


def only_within(text: str, pattern: str) -> set[str]:
    """The functions whose name matches `pattern` (re.match), and those that are called
    only from such functions (on every call path)."""
    funcs = functions(text)
    callers = _callers(funcs)
    inside: dict[str, bool] = {}

    def within(name: str, seen=()) -> bool:
        if name not in inside:
            if re.match(pattern, name):
                inside[name] = True
            elif name not in callers:  # main
                return False
            else:  # a recursive call adds no other path
                inside[name] = all(within(c, (*seen, name)) for c, _ in callers[name]
                                   if c not in (*seen, name))
        return inside[name]

    return {name for name in funcs if within(name)}


def while_loops(text: str) -> Iterator[tuple[str, str, bool]]:
    """(the function it is in, the loop's cond region, whether its trip count is fixed) of
    every while loop.

    Fixed: the cond region is exactly `c = constant N; p = compare LT, i, c; return p`
    for a loop argument i that starts at an integer constant and that the body's
    return gives back as `add i, constant 1`: the form of lax.scan and of a fori_loop
    with static bounds, whose trip count XLA knows (a GPU then runs the loop without
    reading the predicate back on the host), and of no loop that stops on data.
    """
    lines = text.splitlines()
    function = None
    for i, line in enumerate(lines):
        head = re.match(r"\s*func\.func (?:public|private) @([\w.\-]+)\(", line)
        if head:
            function = head.group(1)
        match = _WHILE.search(line)
        if not match:
            continue
        args = _ARG.findall(match.group("args"))
        cond_at = i + 1
        assert lines[cond_at].strip() == "cond {", lines[cond_at]
        cond, do_at = _block(lines, cond_at)
        body, _ = _block(lines, do_at)
        yield function, "\n".join(cond), _fixed(text, args, cond, body)


def _fixed(text: str, args: list[tuple[str, str]], cond: list[str], body: list[str]) -> bool:
    ops_ = [line.strip() for line in cond]
    if len(ops_) != 3:
        return False
    bound = re.match(r"(%\w+) = stablehlo\.constant dense<(\d+)> : tensor<[su]?i\d+>", ops_[0])
    compare = re.match(r"(%\w+) = stablehlo\.compare\s+LT, (%iterArg\w*), (%\w+)", ops_[1])
    if not (bound and compare and compare.group(3) == bound.group(1)
            and ops_[2].startswith(f"stablehlo.return {compare.group(1)} ")):
        return False
    counter = compare.group(2)
    names = [name for name, _ in args]
    start = dict(args)[counter]
    if not _defines(text, start, _CONSTANT):
        return False
    indent = min(len(line) - len(line.lstrip()) for line in body)
    returns = [line.strip() for line in body
               if len(line) - len(line.lstrip()) == indent and "stablehlo.return" in line]
    yielded = re.findall(r"%[\w#]+", returns[-1].split(":")[0])[names.index(counter)]
    body_text = "\n".join(body)
    step = re.search(rf"{re.escape(yielded)} = stablehlo\.add {re.escape(counter)}, (%\w+)",
                     body_text)
    return bool(step) and bool(re.search(
        rf"{re.escape(step.group(1))} = stablehlo\.constant dense<1> : tensor<[su]?i\d+>",
        body_text))


# ------------------------------------------------------------------ named scopes of matmuls

_LOC_DEF = re.compile(r"^(#loc\d*) = loc\((.*)\)$", re.M)


def _locations(text: str) -> dict[str, str]:
    return {name: body for name, body in _LOC_DEF.findall(text)}


def _name(locs: dict[str, str], ref: str, seen=()) -> str:
    """The op name (its name stack) of a location reference, '' if it has none."""
    body = locs.get(ref, "")
    if ref in seen:
        return ""
    quoted = re.match(r'"([^"]*)"\(', body)
    if quoted:
        return quoted.group(1)
    inner = re.match(r"callsite\((#loc\d*) at", body)
    if inner:
        return _name(locs, inner.group(1), (*seen, ref))
    return ""


def matmuls(text: str, scopes: tuple[str, ...]) -> list[tuple[str, str | None]]:
    """(precision, scope) of every dot_general and convolution of text lowered with
    debug_info=True: the scope is whichever of `scopes` (jax.named_scope names) its name
    stack holds, or the one every call site of its function holds (a function lowered
    once and called from a scope); None where none or several do."""
    locs = _locations(text)
    funcs = functions(text)

    def scope_of(name: str) -> set[str]:
        return {s for s in scopes if re.search(rf"(^|[/(]){re.escape(s)}([/)]|$)", name)}

    def line_loc(line: str) -> str:
        found = re.findall(r"loc\((#loc\d*)\)", line)
        return _name(locs, found[-1]) if found else ""

    callers = {callee: [(caller, line_loc(line)) for caller, line in sites]
               for callee, sites in _callers(funcs).items()}

    def function_scope(function: str, seen=()) -> set[str]:
        if function in seen or function not in callers:
            return set()
        found = set()
        for caller, site in callers[function]:
            own = scope_of(site)
            found |= own if own else function_scope(caller, (*seen, function))
        return found

    out = []
    for function, body in funcs.items():
        for line in body:
            if "stablehlo.dot_general" not in line and "stablehlo.convolution" not in line:
                continue
            precision = re.search(r"precision = \[(\w+), (\w+)\]", line)
            value = precision.group(1) if precision else "DEFAULT"
            found = scope_of(line_loc(line)) or function_scope(function)
            out.append((value, next(iter(found)) if len(found) == 1 else None))
    return out
