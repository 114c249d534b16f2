"""Fuzzing the sweep file parser (tests/fuzz.py): at least 10,000 generated inputs, each a valid
sweep or one printable line of SweepFileError, within a time and memory limit; and the defects
the fuzzer found, each pinned by a case of its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from swarmrun.definition.sweepfile import load_sweep
from swarmrun.errors import SweepFileError
from tests import fuzz


@pytest.mark.timeout(400)
def test_ten_thousand_generated_sweep_files_and_overrides() -> None:
    outcome = fuzz.run(10_000)
    assert outcome.valid + outcome.refused >= 10_000
    assert outcome.valid >= 500 and outcome.refused >= 5_000  # both sides of the property exercised


DIGITS = "9" * 5000
FOUND = {
    "deep YAML flow": (".yaml", "task: " + "[" * 10_000, "YAML error"),
    "deep YAML mapping": (".yaml", "task: " + "{a: " * 2_000, "YAML error"),
    "deep JSON": (".json", "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "deep TOML": (".toml", "a = " + "[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "deep but parsable": (
        ".json",
        '{"task": {"call": "a:b"}, "name": ' + "[" * 500 + "]" * 500 + "}",
        "nested too deeply",
    ),
    "5000-digit int, JSON": (
        ".json",
        f'{{"task": {{"call": "a:b"}}, "repeat": {DIGITS}}}',
        "cannot read a value",
    ),
    "5000-digit int, YAML": (".yaml", f"task: {{call: 'a:b'}}\nrepeat: {DIGITS}\n", "cannot read a value"),
    "5000-digit int, TOML": (".toml", f'task = {{call = "a:b"}}\nrepeat = {DIGITS}\n', "cannot read a value"),
    "int too big for a float": (
        ".json",
        f'{{"task": {{"call": "a:b"}}, "params": {{"x": {{"linspace": [0, 1{"0" * 400}, 3]}}}}}}',
        "linspace start and stop must be a finite number",
    ),
    "linspace span overflows": (
        ".yaml",
        "task: {call: 'a:b'}\nparams: {x: {linspace: [-1.0e308, 1.0e308, 3]}}\n",
        "overflows a float",
    ),
    "uniform span overflows": (
        ".yaml",
        "task: {call: 'a:b'}\nsamples: {n: 2, params: {x: {uniform: [-1.0e308, 1.0e308]}}}\n",
        "overflows a float",
    ),
    "int bounds past a float": (
        ".yaml",
        f"task: {{call: 'a:b'}}\nsamples: {{n: 2, params: {{x: {{int: [0, 1{'0' * 400}]}}}}}}\n",
        "int bounds must be within",
    ),
    "key with a line break": (
        ".json",
        '{"task": {"call": "a:b"}, "par\\nams": {}}',
        "unknown key 'par\\nams'",
    ),
    "key of 10,000 characters": (
        ".json",
        '{"task": {"call": "a:b"}, "' + "k" * 10_000 + '": 1}',
        "unknown key 'kkk",
    ),
    "grid of 10^30 points": (
        ".yaml",
        "task: {call: 'a:b'}\nparams: {"
        + ", ".join(f"p{k}: [0,1,2,3,4,5,6,7,8,9]" for k in range(30))
        + "}\n",
        "about 10^30 points is more than a sweep may have",
    ),
}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("case", sorted(FOUND))
def test_defects_the_fuzzer_found(case: str, tmp_path: Path) -> None:
    suffix, text, needle = FOUND[case]
    path = tmp_path / f"sweep{suffix}"
    path.write_text(text)
    with fuzz.time_limit(2.0), pytest.raises(SweepFileError) as e:
        load_sweep(path)
    fuzz.check_error(e.value)
    assert needle in str(e.value), str(e.value)


@pytest.mark.timeout(20)
@pytest.mark.parametrize(
    ("override", "needle"),
    [
        (f"x={DIGITS}", "cannot parse the values"),
        (f"x=range({DIGITS})", "cannot parse the values"),
        ("x\ny=1", "-p x\\ny=1: param name"),
        ("+x=range(0,1000000000000000000000000000000)", "more than a sweep may have"),  # + adds a param
    ],
)
def test_override_defects_the_fuzzer_found(override: str, needle: str, tmp_path: Path) -> None:
    path = tmp_path / "sweep.yaml"
    path.write_text("task: {call: 'a:b'}\nparams: {y: [1, 2]}\n")
    with fuzz.time_limit(2.0):
        try:
            load_sweep(path, [override])
        except SweepFileError as e:
            fuzz.check_error(e)
            assert needle in str(e), str(e)
        else:
            pytest.fail(f"{override!r} was accepted")
