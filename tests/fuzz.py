"""Fuzzing the sweep file and `-p` override parser: Hypothesis strategies and the property checked.

Every input is a sweep file text (YAML, TOML or JSON; generated structures, mutated texts, deep
nesting, huge and negative numbers, unicode, empty values) plus `-p` overrides. The property:
`load_sweep` either returns a valid sweep (bounded size, JSON-able canonical form that rebuilds
the same sweep, computable first and last point) or raises `SweepFileError` with one printable
line. Anything else (another exception, more than `LIMIT` seconds, a memory blow-up) fails.

The CI part is tests/unit/test_fuzz_sweepfile.py; a longer run is a script:

    python -m tests.fuzz --inputs 1000000 [--time-limit 2] [--memory-mib 2048]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import resource
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from swarmrun.definition.sections import TASK_KEYS
from swarmrun.definition.sweep import MAX_POINTS, Sweep, canonical_json
from swarmrun.definition.sweepfile import OPTION_KEYS, TOP_KEYS, load_sweep, sweep_from_dict
from swarmrun.errors import SweepFileError

LIMIT = 2.0  # seconds one input may take (a grid is never expanded, so parsing is fast)
SUFFIXES = (".yaml", ".yml", ".toml", ".json", "")
FORMATS = (".yaml", ".json", ".toml")

# ------------------------------------------------------------------------------------------ scalars

_ALPHABET = st.characters(codec="utf-8", exclude_categories=("Cs",))
texts = st.one_of(
    st.sampled_from(["", " ", "x", "alpha", "{x}", "{", "}", "{{", "{0}", "{x!a}", "{x.y}", "{x:{y}}", "\n"]),
    st.text(_ALPHABET, max_size=12),
    st.text(st.sampled_from("abcxyz_{}:.,=[]()-0123456789 \t\n\u00e9\u2028\x00\x85"), max_size=12),
)
huge_ints = st.one_of(
    st.integers(min_value=-(10**40), max_value=10**40),
    st.sampled_from([10**30, -(10**30), 2**63, -(2**63) - 1, 10**308, 10**309, -(10**400)]),
    st.integers(min_value=300, max_value=4250).map(lambda d: 10**d),
)
ints = st.one_of(st.integers(min_value=-3, max_value=12), huge_ints)
floats = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e-300, 1e308, -1e308, 0.5, -2.5]),
)
scalars = st.one_of(st.none(), st.booleans(), ints, floats, texts)


def _nested(depth: int) -> Any:
    value: Any = 1
    for k in range(depth):
        value = [value] if k % 2 else {"a": value}
    return value


anything = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
deep = st.integers(min_value=20, max_value=400).map(_nested)  # deeper: deep_texts (encoders recurse)
values = st.one_of(scalars, anything, deep)


def misspelled(words: tuple[str, ...]) -> st.SearchStrategy[str]:
    """A key close to a valid one: a letter dropped, doubled, swapped or changed, or the case."""

    @st.composite
    def build(draw: st.DrawFn) -> str:
        word = draw(st.sampled_from(words))
        k = draw(st.integers(min_value=0, max_value=max(0, len(word) - 1)))
        how = draw(st.sampled_from(["drop", "double", "swap", "change", "upper", "space"]))
        if how == "drop":
            return word[:k] + word[k + 1 :]
        if how == "double":
            return word[:k] + word[k] + word[k:]
        if how == "swap" and k + 1 < len(word):
            return word[:k] + word[k + 1] + word[k] + word[k + 2 :]
        if how == "change":
            return word[:k] + draw(st.characters(codec="utf-8", exclude_categories=("Cs",))) + word[k + 1 :]
        if how == "upper":
            return word.upper()
        return " " + word

    return build()


def keys(valid: tuple[str, ...]) -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(valid), st.sampled_from(valid), misspelled(valid), texts, ints)


# --------------------------------------------------------------------------------------- structures

NAMES = ("x", "y", "alpha", "n", "seed", "repeat", "index", "class", "_a", "a1")
param_names = st.one_of(st.sampled_from(NAMES), texts)


def number_list(size: tuple[int, ...]) -> st.SearchStrategy[list[Any]]:
    return st.integers(min_value=min(size), max_value=max(size)).flatmap(
        lambda n: st.lists(st.one_of(ints, floats, scalars), min_size=n, max_size=n)
    )


param_specs = st.one_of(
    st.lists(scalars, max_size=6),
    scalars,
    st.builds(lambda a: {"linspace": a}, number_list((2, 3, 4))),
    st.builds(lambda a: {"logspace": a}, number_list((2, 3, 4, 5))),
    st.builds(lambda a: {"range": a}, st.lists(ints, min_size=0, max_size=4)),
    st.dictionaries(keys(("linspace", "logspace", "range")), values, max_size=2),
    values,
)
distributions = st.one_of(
    st.builds(
        lambda k, a: {k: a},
        keys(("uniform", "loguniform", "normal", "int", "choice")),
        st.one_of(number_list((1, 2, 3)), st.lists(scalars, max_size=4), values),
    ),
    values,
)


@st.composite
def tasks(draw: st.DrawFn) -> Any:
    kind = draw(st.sampled_from(["call", "command", "both", "none", "junk"]))
    task: dict[Any, Any] = {}
    if kind in ("call", "both"):
        task["call"] = draw(
            st.one_of(
                st.sampled_from(
                    ["fixtures.tasks:square", "tests.fixtures.tasks:square", "os:getcwd", "a.b:c", "nope"]
                ),
                texts,
                values,
            )
        )
    if kind in ("command", "both"):
        argv = st.lists(
            st.one_of(
                st.sampled_from(["echo", "true", "{x}", "--a={alpha}", "{index}", "{sweep_id}"]), texts, ints
            ),
            max_size=5,
        )
        task["command"] = draw(st.one_of(argv, values))
    if kind == "junk":
        return draw(values)
    for key in draw(st.lists(keys(TASK_KEYS), max_size=2)):
        task[key] = draw(st.one_of(st.dictionaries(texts, scalars, max_size=3), values))
    return task


@st.composite
def sweeps(draw: st.DrawFn) -> Any:
    """A sweep-like mapping: mostly the right keys with right or wrong values, sometimes junk."""
    if draw(st.integers(min_value=0, max_value=19)) == 0:
        return draw(values)
    d: dict[Any, Any] = {}
    if draw(st.booleans()) or draw(st.booleans()):
        d["task"] = draw(tasks())
    chosen = draw(st.lists(keys(TOP_KEYS), max_size=5))
    for key in chosen:
        if key == "params" or (key not in TOP_KEYS and draw(st.booleans())):
            d[key] = draw(st.dictionaries(param_names, param_specs, max_size=5))
        elif key == "zip":
            d[key] = draw(st.one_of(st.lists(st.lists(param_names, max_size=3), max_size=3), values))
        elif key == "samples":
            d[key] = draw(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "n": ints,
                        "seed": ints,
                        "params": st.dictionaries(param_names, distributions, max_size=3),
                    },
                )
                | values
            )
        elif key == "repeat":
            d[key] = draw(
                st.one_of(ints, st.fixed_dictionaries({}, optional={"n": ints, "seed": ints}), values)
            )
        elif key == "rows":
            d[key] = draw(
                st.fixed_dictionaries(
                    {},
                    optional={
                        "file": st.sampled_from(["rows.csv", "none.csv", "", ".", "/"]) | texts,
                        "columns": values,
                    },
                )
                | values
            )
        elif key in OPTION_KEYS:
            d[key] = draw(st.one_of(ints, floats, st.just("auto"), values))
        else:
            d[key] = draw(values)
    return d


small_numbers = st.one_of(st.integers(-1000, 1000), st.floats(-1e6, 1e6, allow_nan=False))
valid_scalars = st.one_of(st.none(), st.booleans(), small_numbers, st.text(_ALPHABET, max_size=8), huge_ints)
valid_param_specs = st.one_of(
    st.lists(valid_scalars, min_size=1, max_size=5),
    valid_scalars,
    st.builds(lambda a, b, n: {"linspace": [a, b, n]}, small_numbers, small_numbers, st.integers(1, 50)),
    st.builds(
        lambda a, b, n: {"logspace": [a, b, n]}, st.integers(-5, 5), st.integers(-5, 5), st.integers(1, 9)
    ),
    st.builds(
        lambda a, n, k: {"range": [a, a + n * k, k]},
        st.integers(-(10**12), 10**12),
        st.integers(1, 40),
        st.integers(1, 5),
    ),
    st.builds(lambda n: {"range": [n]}, st.integers(1, 10**6)),
)
valid_distributions = st.one_of(
    st.builds(lambda a, w: {"uniform": [a, a + w]}, small_numbers, st.floats(0, 1e6)),
    st.builds(lambda a, w: {"loguniform": [a, a * w]}, st.floats(1e-9, 1e3), st.floats(1, 1e3)),
    st.builds(lambda a, w: {"normal": [a, w]}, small_numbers, st.floats(0, 1e3)),
    st.builds(lambda a, w: {"int": [a, a + w]}, st.integers(-(2**40), 2**40), st.integers(0, 10**6)),
    st.builds(lambda c: {"choice": c}, st.lists(valid_scalars, min_size=1, max_size=4)),
)
VALID_NAMES = st.sampled_from(["x", "y", "alpha", "beta", "n", "lr", "_k", "été", "x1"])


@st.composite
def valid_sweeps(draw: st.DrawFn) -> dict[str, Any]:
    """A sweep that should parse (each part drawn from what the docs allow)."""
    params = draw(st.dictionaries(VALID_NAMES, valid_param_specs, max_size=4))
    d: dict[str, Any] = {"params": params}
    names = list(params)
    if draw(st.booleans()):
        d["task"] = {"call": draw(st.sampled_from(["fixtures.tasks:square", "pkg.mod:f", "a.b.c:d.e"]))}
    else:
        argv = ["echo", *(f"--{n}={{{n}}}" for n in draw(st.permutations(names))), "{index}"]
        d["task"] = {
            "command": argv,
            "env": draw(
                st.dictionaries(st.sampled_from(["A", "B_2"]), st.text(_ALPHABET, max_size=5), max_size=2)
            ),
        }
    if draw(st.booleans()):
        d["name"] = draw(
            st.text(
                st.characters(codec="utf-8", categories=("L", "N", "P", "Zs")), min_size=1, max_size=20
            ).filter(str.strip)
        )
    if len(names) >= 2 and draw(st.booleans()):
        n = draw(st.integers(1, 4))
        for m in names[:2]:
            params[m] = draw(st.lists(valid_scalars, min_size=n, max_size=n))
        d["zip"] = [names[:2]]
    if draw(st.booleans()):
        sampled = draw(
            st.dictionaries(st.sampled_from(["s", "t", "u"]), valid_distributions, min_size=1, max_size=3)
        )
        d["samples"] = {
            "n": draw(st.integers(1, 10**6)),
            "seed": draw(st.integers(-(2**63), 2**63)),
            "params": sampled,
        }
    if draw(st.booleans()):
        d["repeat"] = draw(
            st.one_of(
                st.integers(1, 100),
                st.builds(lambda n, s: {"n": n, "seed": s}, st.integers(1, 100), st.integers(0, 2**31)),
            )
        )
    if draw(st.booleans()):
        d["rows"] = {
            "file": "rows.csv",
            **draw(st.sampled_from([{}, {"columns": ["x"]}, {"columns": ["y", "z"]}])),
        }
    for key in draw(st.lists(st.sampled_from(OPTION_KEYS), max_size=3, unique=True)):
        d[key] = draw(
            {
                "timeout": st.one_of(st.none(), st.floats(0.1, 1e6)),
                "retries": st.integers(0, 10),
                "backoff": st.floats(0, 100),
                "chunk": st.one_of(st.just("auto"), st.integers(1, 1000)),
                "outputs": st.lists(st.sampled_from(["*.npz", "plots/*.png", "out/**/*.txt"]), max_size=3),
                "max_output_bytes": st.one_of(
                    st.integers(1, 2**40), st.sampled_from(["16MiB", "4KiB", "1GB"])
                ),
                "max_sweep_output_bytes": st.one_of(st.integers(1, 2**50), st.sampled_from(["10GiB"])),
                "logs": st.sampled_from(["all", "failed", "none"]),
                "outputs_dir": st.just("/tmp"),
            }[key]
        )
    return d


def big_grid(draw: st.DrawFn) -> Any:
    """A grid too large to run (up to 10^40 points): refused with its size, never expanded."""
    axes = draw(st.integers(min_value=2, max_value=40))
    return {
        "task": {"call": "fixtures.tasks:square"},
        "params": {f"p{k}": list(range(10)) for k in range(axes)},
    }


# ---------------------------------------------------------------------------------------- encoding


def _toml_key(key: Any) -> str:
    return json.dumps(str(key), ensure_ascii=False)


def _toml_value(v: Any, depth: int = 0) -> str:
    if depth > 200:
        raise ValueError("too deep for the TOML writer")
    if v is None:
        return '""'  # TOML has no null
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x, depth + 1) for x in v) + "]"
    return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x, depth + 1)}" for k, x in v.items()) + "}"


def to_toml(data: Any) -> str:
    if not isinstance(data, dict):
        return f"value = {_toml_value(data)}\n"
    return "".join(f"{_toml_key(k)} = {_toml_value(v)}\n" for k, v in data.items())


def encode(data: Any, suffix: str) -> str:
    """`data` as a sweep file of this kind (YAML for no suffix); the encoders' own limits -> a plain text."""
    try:
        if suffix == ".toml":
            return to_toml(data)
        if suffix == ".json":
            return json.dumps(data, ensure_ascii=False)
        return yaml.dump(data, Dumper=yaml.CSafeDumper, allow_unicode=True, width=1_000_000)
    except (ValueError, TypeError, RecursionError, yaml.YAMLError):
        return "task: [unencodable"  # too deep for the TOML writer


@st.composite
def mutate(draw: st.DrawFn, text: str) -> str:
    """Damage a text a little: cut it, delete, duplicate or insert a few characters."""
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        if not text:
            break
        k = draw(st.integers(min_value=0, max_value=len(text) - 1))
        how = draw(st.sampled_from(["cut", "delete", "dup", "insert"]))
        if how == "cut":
            text = text[:k]
        elif how == "delete":
            text = text[:k] + text[k + 1 :]
        elif how == "dup":
            text = text[:k] + text[k : k + 8] * 2 + text[k + 8 :]
        else:
            text = text[:k] + draw(st.sampled_from(list("[]{}:,\"'#\n\t =-&*!|>%@`\\\x00\u2028"))) + text[k:]
    return text


@st.composite
def deep_texts(draw: st.DrawFn, suffix: str) -> str:
    n = draw(st.integers(min_value=50, max_value=20_000))
    if suffix == ".toml":
        return "a = " + "[" * n + "]" * draw(st.sampled_from([0, n]))
    opener = draw(st.sampled_from(["[", "{a: ", '{"a": ', "- "]))
    return "task: " + opener * n


@st.composite
def sweep_texts(draw: st.DrawFn) -> list[tuple[str, str]]:
    """(suffix, text) of sweep files: one generated structure (or text) as YAML, JSON and TOML."""
    how = draw(st.integers(min_value=0, max_value=19))
    if how == 0:
        return [(sfx, draw(deep_texts(sfx))) for sfx in (".yaml", ".toml")]
    if how == 1:
        text = draw(st.text(_ALPHABET, max_size=200))
        return [(sfx, text) for sfx in SUFFIXES]
    if how == 2:
        data = big_grid(draw)
        return [(sfx, encode(data, sfx)) for sfx in FORMATS]
    if how == 3:  # integers past Python's 4300-digit conversion limit, as the parsers read them
        digits = "9" * draw(st.integers(min_value=4290, max_value=20_000))
        key = draw(st.sampled_from(["params", "repeat", "timeout", "chunk"]))
        body = f'{{"x": [{digits}]}}' if key == "params" else digits
        text = f'{{"task": {{"call": "fixtures.tasks:square"}}, "{key}": {body}}}'
        toml = f'task = {{call = "fixtures.tasks:square"}}\n{key} = {body.replace(":", " =")}\n'
        return [(".json", text), (".yaml", text), (".toml", toml)]
    if how < 12:  # mostly valid: one part made wrong, or the text damaged, now and then
        data = draw(valid_sweeps())
        wrong = draw(sweeps()) if how == 4 else {}
        if isinstance(wrong, dict):
            data.update(wrong)
    else:
        data = draw(sweeps())
    files = [(sfx, encode(data, sfx)) for sfx in FORMATS]
    if how == 5 or how >= 15:
        files = [(sfx, draw(mutate(text))) for sfx, text in files]
    return files


_override_values = st.one_of(
    st.sampled_from(
        [
            "1",
            "1,2,3",
            "0.1,0.2",
            "range(1,10)",
            "range(10**30)",
            "range(0,1000000000000000000000000000000)",
            "linspace(0,1,5)",
            "logspace(-3,0,4)",
            "logspace(0,400,3)",
            "range(",
            "range()",
            "linspace(1,2)",
            "[1,2]",
            "{range: [0, 3]}",
            "{a: 1, b: 2}",
            "[",
            "{",
            "1e999",
            "-1e999",
            ".nan",
            "a,,b",
            ",",
            " ",
            "'x'",
            '"y"',
            "null",
            "~",
            "true,false",
            "1_000",
            "0x10",
            "&a",
            "*a",
            "!!python/object:os.system",
            "\u00e9\u00e8",
            "x\ny",
            "9" * 5000,
            "range(" + "9" * 5000 + ")",
        ]
    ),
    texts,
    st.lists(st.one_of(texts, ints.map(str), floats.map(repr)), max_size=5).map(",".join),
)
overrides = st.lists(
    st.one_of(
        st.builds(lambda n, v: f"{n}={v}", param_names, _override_values),
        texts,
        st.sampled_from(["=", "x=", "=1", "x", "x==1", " x = 1 ", "x=1=2"]),
    ),
    max_size=3,
)

# ----------------------------------------------------------------------------------------- property


class InputTooSlow(Exception):
    """An input took longer than its time limit."""


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Raise InputTooSlow after `seconds` of this process's CPU time (other load on the machine does
    not count); also at the end of the block when the signal hit code that swallows exceptions."""
    expired: list[bool] = []

    def expire(signum: int, frame: object) -> None:
        expired.append(True)
        raise InputTooSlow(f"input took more than {seconds} s of CPU")

    previous = signal.signal(signal.SIGPROF, expire)
    signal.setitimer(signal.ITIMER_PROF, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)
    if expired:
        raise InputTooSlow(f"input took more than {seconds} s of CPU")


@contextlib.contextmanager
def memory_limit(mib: int) -> Iterator[None]:
    """Cap this process's address space at its current size plus `mib` (a blow-up -> MemoryError)."""
    pages = int(Path("/proc/self/statm").read_text().split()[0])
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    cap = pages * resource.getpagesize() + mib * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (cap if hard == resource.RLIM_INFINITY else min(cap, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def check_valid(sweep: Sweep) -> None:
    """What a valid sweep promises: bounded size, a canonical form that rebuilds it, computable points."""
    assert 1 <= sweep.size <= MAX_POINTS, sweep.size
    text = canonical_json(sweep.to_dict())
    again = sweep_from_dict(json.loads(text))
    assert again.id == sweep.id and again == sweep, (sweep.to_dict(), again.to_dict())
    for i in {0, sweep.size - 1}:
        point = sweep.point(i)
        assert list(point) == list(sweep.param_names)
        canonical_json(point)


def check_error(e: SweepFileError) -> None:
    message = str(e)
    assert message and message.isprintable() and len(message.splitlines()) == 1, repr(message)
    assert len(message) < 1000, len(message)


@dataclass
class Outcome:
    valid: int = 0
    refused: int = 0
    slowest: float = 0.0  # CPU seconds of the slowest input


def check_input(
    directory: Path, suffix: str, text: str, params: list[str], outcome: Outcome | None = None
) -> None:
    """The property, through the real path: the file written, `load_sweep`, the sweep checked."""
    path = directory / f"sweep{suffix}"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    start = time.process_time()
    with time_limit(LIMIT):
        try:
            sweep = load_sweep(path, params)
        except SweepFileError as e:
            check_error(e)
            sweep = None
        else:
            check_valid(sweep)
    if outcome:
        outcome.slowest = max(outcome.slowest, time.process_time() - start)
        if sweep is None:
            outcome.refused += 1
        else:
            outcome.valid += 1


def check_example(directory: Path, files: list[tuple[str, str]], params: list[str], outcome: Outcome) -> None:
    """One Hypothesis example is several inputs: each file with the overrides, the first without."""
    for suffix, text in files:
        check_input(directory, suffix, text, params, outcome)
    if params:
        check_input(directory, *files[0], [], outcome)


def rows_dir() -> Path:
    """A directory with the rows.csv the generated sweeps may name."""
    shm = Path("/dev/shm")  # noqa: S108 - memory, not disk: the fuzzer writes a file per input
    directory = Path(tempfile.mkdtemp(prefix="swarmrun-fuzz-", dir=shm if shm.is_dir() else None))
    (directory / "rows.csv").write_text("x,y,z\n1,a,0.5\n2,b,\n3,c,nan\n")
    return directory


def run(inputs: int, memory_mib: int = 2048) -> Outcome:
    """Check at least `inputs` generated inputs (3 to 6 per example); raises on the first failure."""
    directory, outcome = rows_dir(), Outcome()

    @settings(
        max_examples=inputs // 3 + 1,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(sweep_texts(), overrides)
    def fuzz(files: list[tuple[str, str]], params: list[str]) -> None:
        check_example(directory, files, params, outcome)

    try:
        with memory_limit(memory_mib):
            fuzz()
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return outcome


def main(argv: list[str] | None = None) -> int:
    global LIMIT
    parser = argparse.ArgumentParser(prog="python -m tests.fuzz", description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000)
    parser.add_argument("--time-limit", type=float, default=LIMIT, help="seconds per input")
    parser.add_argument("--memory-mib", type=int, default=2048, help="address space allowed on top")
    args = parser.parse_args(argv)
    LIMIT = args.time_limit
    start = time.monotonic()
    outcome = run(args.inputs, args.memory_mib)
    took = time.monotonic() - start
    print(
        f"{outcome.valid + outcome.refused} inputs in {took:.0f} s: {outcome.valid} valid sweeps, "
        f"{outcome.refused} refused with one line; no other outcome; slowest input "
        f"{outcome.slowest:.3f} s of CPU",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
