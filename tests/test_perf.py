"""``concurrent-dirty perf``: a tiny sweep end to end, its JSON, its
errors and its plots. No timing assertions: only shapes and counts."""

from __future__ import annotations

import json
import sys

import pytest

from concurrent_dirty.cli.main import main
from concurrent_dirty.search.perf import PerfConfig, run_perf

TINY = ["perf", "--pages", "130", "--rounds", "1", "--fraction", "0.05,1", "--vcpus", "1",
        "--quiet"]

POINT_FIELDS = {"algorithm", "vcpus", "pages", "fraction", "dirty_pages", "rounds", "get_ms",
                "clear_ms", "get_ms_rounds", "clear_ms_rounds", "harvested_pages",
                "pages_per_second", "vcpu_wait_us", "fault_wait_us", "exit_wait_us",
                "ring_full_wait_us", "writes",
                "dirtying_seconds"}


def test_tiny_sweep_prints_a_table_and_writes_json(tmp_path, capsys):
    path = tmp_path / "perf.json"
    assert main([*TINY, "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "GET ms" in out.splitlines()[0] and "wait p99 us" in out.splitlines()[0]
    report = json.loads(path.read_text())
    assert report["command"] == "perf" and report["interrupted"] is False
    assert report["error"] is None
    assert report["config"]["fractions"] == [0.05, 1.0]
    points = report["points"]
    assert [(p["algorithm"], p["fraction"]) for p in points] == [
        (a, f) for a in ("srcu", "xchg", "manual", "ring-256", "ring-4096")
        for f in (0.05, 1.0)]
    for p in points:
        assert set(p) == POINT_FIELDS
        assert p["rounds"] == 1 and p["vcpus"] == 1 and p["pages"] == 130
        assert p["dirty_pages"] == (7 if p["fraction"] == 0.05 else 130)
        # every page dirtied before the harvest must be reported by it
        assert p["harvested_pages"] >= p["dirty_pages"]
        for key in ("p50", "p99", "max"):
            assert p["vcpu_wait_us"][key] >= 0
        assert set(p["get_ms"]) == {"p50", "max"}
        assert (p["clear_ms_rounds"] != []) == (p["algorithm"] == "manual")
    assert report["crossovers"][0]["vcpus"] == 1


def test_vcpus_and_fractions_are_repeatable_lists():
    report = run_perf(PerfConfig(algorithms=["xchg"], vcpus=[1, 2], pages=64,
                                 fractions=[1 / 64, 1.0], rounds=1))
    assert [(p.vcpus, p.dirty_pages) for p in report.points] == [(1, 1), (1, 64), (2, 1),
                                                                  (2, 64)]
    assert all(h >= p.dirty_pages for p in report.points for h in p.harvested)


@pytest.mark.parametrize("args, expected", [
    (["--fraction", "1.5"], "expected a dirty fraction in (0, 1], got '1.5'"),
    (["--fraction", "0"], "expected a dirty fraction in (0, 1], got '0'"),
    (["--fraction", "0.1,,0.2"], "expected a dirty fraction in (0, 1]"),
    (["--pages", "99999999"], "expected a number of pages between 1 and 4194304"),
    (["--vcpus", "0"], "expected a number of vCPUs between 1 and 64, got '0'"),
    (["--algorithm", "nope"], "expected an algorithm in"),
    (["--rounds", "0"], "expected a number of rounds between 1 and 10000"),
])
def test_bad_inputs_are_one_line_usage_errors(args, expected, capsys):
    try:
        code = main([*TINY, *args])
    except SystemExit as exc:  # argparse's errors
        code = exc.code
    assert code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("concurrent-dirty: error:"), captured.err
    assert expected in lines[0]
    assert captured.out == ""


def test_plot_without_matplotlib_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert main([*TINY, "--plot", str(tmp_path / "plots")]) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert lines == ["concurrent-dirty: error: expected matplotlib for --plot, got none "
                     "installed: pip install 'concurrent-dirty[plot]'"]
    assert captured.out == ""  # checked before the sweep, not after it
    assert not (tmp_path / "plots").exists()


def test_plot_writes_png_and_svg(tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed: "
                                             "pip install 'concurrent-dirty[plot]'")
    out_dir = tmp_path / "plots"
    assert main([*TINY, "--plot", str(out_dir)]) == 0
    png = out_dir / "dirty_log_perf.png"
    svg = out_dir / "dirty_log_perf.svg"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in svg.read_text()
    assert f"plot: {png}" in capsys.readouterr().out


def test_the_ring_runs_at_each_ring_size():
    report = run_perf(PerfConfig(algorithms=["ring", "ring-32"], ring_sizes=[16, 32], pages=256,
                                 fractions=[0.25, 1.0], vcpus=[1], rounds=1))
    assert [(p.algorithm, p.dirty_pages) for p in report.points] == [
        ("ring-16", 64), ("ring-16", 256), ("ring-32", 64), ("ring-32", 256)]
    # every page dirtied before the harvest is reported: by the harvest's reap, or
    # collected at the ring-full exits of the dirtying phase and taken by the harvest
    assert all(h >= p.dirty_pages for p in report.points for h in p.harvested)
    assert report.to_json()["config"]["algorithms"] == ["ring-16", "ring-32"]


def test_a_bad_ring_size_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["perf", "--ring-size", "8"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "a ring size between 16 and 65536" in err
