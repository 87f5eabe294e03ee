"""``tagger bench``: the three ways in rounds, their medians and ratios (not timings)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tagger.bench import Throughput, median_throughputs
from tagger.cli.bench import report
from tests.conftest import run_cli, run_tagger


def _round(step: float, framework: float, coursework: float, peak: float) -> list[Throughput]:
    return [
        Throughput("(a) model step alone", step, peak),
        Throughput("(b) framework loop", framework, peak + 10),
        Throughput("(c) coursework loop", coursework, peak + 20),
    ]


def test_report_takes_medians_over_rounds_and_ratios_per_round() -> None:
    rounds = [_round(100, 80, 50, 500), _round(200, 190, 100, 510), _round(50, 30, 40, 520)]
    medians = median_throughputs(rounds)
    assert [m.clips_per_s for m in medians] == [100, 80, 50]
    assert [m.peak_mib for m in medians] == [500, 510, 520]  # first round: RSS only grows
    assert medians[0].epoch_s == pytest.approx(16_963 / 100)
    text = report(rounds)
    rows = re.findall(r"^(\d|median)\s+(\d+)%\s+(\d+)%\s+([\d.]+)x$", text, re.MULTILINE)
    assert rows == [
        ("1", "80", "50", "1.60"),
        ("2", "95", "50", "1.90"),
        ("3", "60", "80", "0.75"),
        ("median", "80", "50", "1.60"),
    ]


@pytest.mark.slow
def test_bench_runs_the_three_ways_and_reuses_its_clips(tmp_path: Path) -> None:
    args = ["-m", "tagger", "bench", "--clips", "24", "--steps", "2", "--warmup", "1",
            "--dir", str(tmp_path / "clips")]  # fmt: skip
    first = run_cli(*args, "--rounds", "2", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    for way in ("(a) model step alone", "(b) framework loop", "(c) coursework loop"):
        (line,) = [row for row in first.stdout.splitlines() if row.startswith(way)]
        clips_per_s, epoch_s, peak_mib = map(float, line[len(way) :].split())
        assert clips_per_s > 0 and peak_mib > 0
        assert epoch_s == pytest.approx(16_963 / clips_per_s, rel=0.01)
    assert re.search(r"^2\s+\d+%", first.stdout, re.MULTILINE)  # one ratio line per round
    assert re.search(r"^median\s+\d+%", first.stdout, re.MULTILINE)

    meta = tmp_path / "clips" / "store" / "meta.json"
    written = meta.stat().st_mtime_ns
    again = run_cli(*args, "--rounds", "1", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert meta.stat().st_mtime_ns == written  # the clips of the first run, not new ones


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--store", "/nonexistent/store"], "data.path=/nonexistent/store is not a clip store"),
        (["--clips", "5"], "argument --clips: must be a whole number from 20 to 10000000"),
        (["model=nope"], "unknown model 'nope'"),
        (["data.nokey=3"], "bad override: Could not override 'data.nokey'"),
    ],
)
def test_bad_arguments_fail_in_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = run_tagger("bench", "--dir", str(tmp_path / "clips"), *args, cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert message in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "clips" / "store").exists()  # failed before writing any clips
