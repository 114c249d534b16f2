"""Output keys of a sweep file, matching output files in a point directory, log buffers, error groups."""

from __future__ import annotations

import io
import logging
import sys
import time
from pathlib import Path

import pytest

from swarmrun.definition.sweepfile import parse_sweep, sweep_from_dict
from swarmrun.errors import SweepFileError
from swarmrun.execution.failures import group
from swarmrun.execution.outputs import OutputTooLarge, PointDir, match, parse_size
from swarmrun.execution.pointlog import CUT_MARK, TailBuffer, capture, keep_log
from swarmrun.execution.sharedfs import keep_only


def test_output_options_parse_round_trip_and_keep_the_sweep_id() -> None:
    base = {"task": {"command": ["prog", "{outdir}"]}, "params": {"x": [1, 2]}}
    plain = parse_sweep(base)
    with_outputs = parse_sweep(
        {**base, "outputs": ["*.npz", "plots/*.png"], "max_output_bytes": "1MiB", "logs": "failed"}
    )
    assert with_outputs.id == plain.id  # options, not identity
    assert with_outputs.options.outputs == ("*.npz", "plots/*.png")
    assert with_outputs.options.max_output_bytes == 2**20
    assert sweep_from_dict(with_outputs.to_dict()).options == with_outputs.options
    assert "outputs" not in plain.to_dict()["options"]  # older specs stay as they were


@pytest.mark.parametrize(
    ("extra", "why"),
    [
        ({"outputs": ["../x"]}, "leaves the point's directory"),
        ({"outputs": ["/abs/*.txt"]}, "is an absolute path"),
        ({"outputs": ["ok/*", "a/../../b"]}, "outputs[1]"),
        ({"outputs": [3]}, "expected a glob"),
        ({"max_output_bytes": "lots"}, "expected a number of bytes"),
        ({"max_output_bytes": 0}, "at least 1 byte"),
        ({"logs": "some"}, "expected one of all, failed, none"),
        ({"outputs_dir": "relative/dir"}, "expected an absolute path"),
        ({"outptus": ["*"]}, "outptus"),
    ],
)
def test_bad_output_keys_are_one_line_errors(extra: dict[str, object], why: str) -> None:
    with pytest.raises(SweepFileError, match=why.replace("[", r"\[").replace("]", r"\]")):
        parse_sweep({"task": {"call": "m:f"}, **extra}, source="s.yaml")


def test_parse_size_units() -> None:
    assert [parse_size("x", v) for v in (10, "100KiB", "16 MiB", "2GB", "1.5k")] == [
        10,
        102400,
        16 * 2**20,
        2 * 10**9,
        1500,
    ]


def test_match_finds_files_by_glob_never_outside_and_enforces_the_cap(tmp_path: Path) -> None:
    dirs = PointDir(base=str(tmp_path))
    with dirs as d:
        (d / "a.npz").write_bytes(b"12345")
        (d / "plots").mkdir()
        (d / "plots" / "p.png").write_bytes(b"png")
        (d / "skip.log").write_text("no")
        outside = tmp_path / "secret.npz"
        outside.write_text("outside")
        (d / "link.npz").symlink_to(outside)
        files = match(d, ["*.npz", "plots/*.png", "**/*.png"], max_bytes=100)
        assert [(f.name, f.size) for _, f in files] == [("a.npz", 5), ("plots/p.png", 3)]
        assert files[0][1].sha256 == "5994471abb01112afcc18159f6cc74b4f511b99806da59b3caf5a9c173cacfc5"
        with pytest.raises(
            OutputTooLarge, match="output file a.npz is 5 bytes, over max_output_bytes \\(4\\)"
        ):
            match(d, ["*.npz"], max_bytes=4)
        with pytest.raises(OutputTooLarge, match="outputs reach 8 bytes"):
            match(d, ["*.npz", "plots/*"], max_bytes=6)
    assert list(d.iterdir()) == []  # emptied on exit
    dirs.remove()
    assert not d.exists()


def test_point_dir_is_emptied_when_the_point_raises_and_dead_workers_dirs_go(tmp_path: Path) -> None:
    dead = tmp_path / "swarmrun-point-999999999-abc"
    (dead / "sub").mkdir(parents=True)
    dirs = PointDir(base=str(tmp_path))
    with pytest.raises(RuntimeError), dirs as d:
        (d / "x").write_text("y")
        (d / "deep" / "er").mkdir(parents=True)
        raise RuntimeError
    assert list(d.iterdir()) == []
    assert not dead.exists()
    with dirs as again:
        assert again == d and list(again.iterdir()) == []


def test_tail_buffer_keeps_the_last_characters() -> None:
    buffer = TailBuffer(limit=100)
    for n in range(1000):
        buffer.write(f"line {n}\n")
    text = buffer.getvalue()
    assert text.startswith(CUT_MARK) and text.endswith("line 999\n") and len(text) <= 100 + len(CUT_MARK)
    small = TailBuffer(limit=100)
    small.write("hi\n")
    assert small.getvalue() == "hi\n"


def test_capture_takes_prints_stderr_and_logging_then_restores(capsys: pytest.CaptureFixture[str]) -> None:
    out, err = sys.stdout, sys.stderr
    with capture() as buffer:
        print("to stdout")
        print("to stderr", file=sys.stderr)
        logging.getLogger("sim.step").warning("step %d", 3)
    assert sys.stdout is out and sys.stderr is err
    assert buffer.getvalue() == "to stdout\nto stderr\nWARNING sim.step: step 3\n"
    assert isinstance(buffer, io.TextIOBase)
    assert not [h for h in logging.getLogger().handlers if getattr(h, "stream", None) is buffer]


def test_log_policy_and_error_groups() -> None:
    assert [keep_log(p, s) for p in ("all", "failed", "none") for s in ("ok", "error")] == [
        True,
        True,
        False,
        True,
        False,
        False,
    ]
    assert group(["b", "a", "b", "c", "a", "b"]) == [("b", 3), ("a", 2), ("c", 1)]


def test_point_dir_is_empty_for_every_point_even_within_one_clock_tick(tmp_path: Path) -> None:
    dirs = PointDir(base=str(tmp_path))
    for n in range(300):  # fast enough that many points share a timestamp tick
        with dirs as d:
            assert list(d.iterdir()) == [], n
            if n % 7 == 0:
                (d / f"f{n}").write_text("x")
    time.sleep(0.15)
    for n in range(50):
        with dirs as d:
            assert list(d.iterdir()) == [], n
            if n % 5 == 0:
                (d / "sub").mkdir()


def test_a_record_names_its_execution_and_files_only_when_it_has_any() -> None:
    from swarmrun.execution.outputs import OutputFile
    from swarmrun.execution.outputstore import record_files
    from swarmrun.execution.pointlog import Execution
    from swarmrun.execution.pointrun import Extras
    from swarmrun.execution.results import Result, complete_record, encode_record
    from swarmrun.execution.task import Outcome

    execution = Execution("ab12cd34", "w", "n", 0.0, 0.1, 0, "ok")
    files = (OutputFile("a.npz", 5, "f" * 64),)
    origins = {3: ("s", "w")}
    for outcome in (
        Outcome("ok", value=1, duration=0.1),  # a format-2 ok record: [origin, value, d, a, t]
        Outcome("ok", value={"a": [1]}, duration=0.1, exit_code=0),  # ... with its optional object
        Outcome("error", error="boom", duration=0.1),  # a failure record: an object
    ):
        status, record = encode_record(outcome, attempt=1, worker="w", sweep_id="s")
        assert Extras("ab12cd34", execution, None, ()).extend(record) == record  # nothing to add
        extended = Extras("ab12cd34", execution, "log", files).extend(record)
        stored = complete_record(extended, 3) if status == "ok" else extended
        assert record_files(stored) == ("ab12cd34", list(files))
        result = Result.decode(0, {}, stored, "s", origins)
        assert result.files == (("a.npz", 5, "f" * 64),)
        assert (result.status, result.value, result.exit_code) == (status, outcome.value, outcome.exit_code)
    assert record_files(None) == (None, [])


def test_a_command_gets_its_point_dir_as_outdir_and_env_and_its_log(tmp_path: Path) -> None:
    from swarmrun.execution.task import CommandTask

    script = (
        "import os, sys; print(str(sys.argv[1] == os.environ['SWARMRUN_POINT_DIR']).lower()); "
        "print('e', file=sys.stderr)"
    )
    task = CommandTask((sys.executable, "-c", script, "{outdir}"), env={}, cwd=None, sweep_id="s" * 16)
    outcome = task.run({}, index=0, timeout=None, point_dir=tmp_path, log=True)
    assert outcome.value is True
    assert outcome.log == "--- stdout ---\ntrue\n\n--- stderr ---\ne\n"
    assert task.run({}, index=0, timeout=None, point_dir=tmp_path).log is None


def test_grown_lists_only_the_error_groups_whose_count_grew_most_frequent_first() -> None:
    from swarmrun.execution.failures import grown

    counts = {"A": 5, "B": 2, "C": 7, "D": 1}
    lines, others = grown(counts, {"A": 5, "B": 1, "C": 3})
    assert lines == [
        "errors so far: 7 x C (+4)",
        "errors so far: 2 x B (+1)",
        "errors so far: 1 x D (+1)",
    ]
    assert others == 0
    assert grown(counts, counts) == ([], 0)
    lines, others = grown({f"E{i}": i + 1 for i in range(8)}, {}, limit=3)
    assert lines[0] == "errors so far: 8 x E7 (+8)" and len(lines) == 3 and others == 5


def test_match_in_new_directories_under_a_symlinked_parent_gives_real_paths(tmp_path: Path) -> None:
    """Staging directories are new for every execution; the parent's real path is resolved once,
    and a leaf that is itself a symlink is still resolved (never followed out unnoticed)."""
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "via").symlink_to(real)
    for k in range(3):
        d = tmp_path / "via" / f"{k}.tok"
        d.mkdir()
        (d / "out.bin").write_bytes(b"x" * k)
        ((d / "sub").mkdir(), (d / "sub" / "p.png").write_bytes(b"p"))
        files = match(d, ["*.bin", "sub/*.png"], max_bytes=100)
        assert [(w, f.name, f.size) for w, f in files] == [
            (str(real / f"{k}.tok" / "out.bin"), "out.bin", k),
            (str(real / f"{k}.tok" / "sub" / "p.png"), "sub/p.png", 1),
        ]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "e.bin").write_bytes(b"e")
    (tmp_path / "via" / "leaf").symlink_to(elsewhere)
    found = match(tmp_path / "via" / "leaf", ["*.bin"], max_bytes=100)
    assert [w for w, _ in found] == [str(elsewhere / "e.bin")]


def test_keep_only_removes_everything_but_the_kept_files(tmp_path: Path) -> None:
    d = tmp_path / "d"
    (d / "plots" / "deep").mkdir(parents=True)
    (d / "a.npz").write_bytes(b"a")
    (d / "b.log").write_text("b")
    (d / "plots" / "p.png").write_bytes(b"p")
    (d / "plots" / "q.txt").write_text("q")
    (d / "plots" / "deep" / "r").write_text("r")
    (d / "link").symlink_to(tmp_path)
    keep_only(d, {"a.npz", "plots/p.png"})
    assert sorted(p.relative_to(d).as_posix() for p in d.rglob("*")) == ["a.npz", "plots", "plots/p.png"]
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "out.bin").write_bytes(b"o")
    keep_only(flat, {"out.bin"})
    assert [p.name for p in flat.iterdir()] == ["out.bin"]
    (flat / "extra").write_text("x")
    keep_only(flat, {"out.bin"})
    assert [p.name for p in flat.iterdir()] == ["out.bin"]


@pytest.mark.parametrize("how", ["remove", "rename", "replace"])
def test_a_point_that_removes_or_moves_its_own_directory_leaves_the_next_one_a_fresh_one(
    tmp_path: Path, how: str
) -> None:
    dirs = PointDir(base=str(tmp_path))
    with dirs:
        pass
    time.sleep(0.15)  # settled: only a changed directory is scanned
    for n in range(3):
        with dirs as d:
            if how == "remove":
                d.rmdir()
            elif how == "rename":
                d.rename(tmp_path / f"moved-{n}")
            else:
                d.rename(tmp_path / f"moved-{n}")
                d.mkdir()
                (d / "left").write_text("x")
        with dirs as fresh:
            assert fresh.is_dir() and list(fresh.iterdir()) == [], (how, n)
        time.sleep(0.15)
    dirs.remove()
