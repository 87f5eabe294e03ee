"""``benchmarks/gpu_check.sh``: on a python that has PyTorch but not the rest of tagger's
dependencies (a cluster node's), it installs them from wheels beside it, with no network,
and prints one table of ``tagger bench`` rows. Here it runs with ``--device cpu``."""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tagger.bench import Throughput
from tagger.cli.bench import summary
from tests.conftest import REPO_ROOT

#: What a cluster node's PyTorch image lacks, which the script installs from wheels.
NODE_LACKS = ("hydra-core", "omegaconf", "antlr4-python3-runtime", "soundfile", "soxr", "cffi",
              "pycparser")  # fmt: skip
ROWS = ("fp32", "bf16+compile", "on_device", "on_device b64", "augment")


def repack_wheel(name: str, out: Path) -> Path:
    """An installed distribution as a wheel again (its files and its .dist-info), into ``out``:
    the wheels a user would download for the node, without the network."""
    dist = importlib.metadata.distribution(name)
    tags = [line.split(": ")[1].split("-") for line in (dist.read_text("WHEEL") or "").splitlines()
            if line.startswith("Tag: ")]  # fmt: skip
    tag = "-".join(".".join(sorted({t[i] for t in tags})) for i in range(3))
    base = next(f for f in dist.files or [] if f.parts[0].endswith(".dist-info")).parts[0]
    wheel = out / f"{base.removesuffix('.dist-info')}-{tag}.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for file in dist.files or []:
            if file.parts[0] != ".." and "__pycache__" not in file.parts:
                archive.write(file.locate(), file.as_posix())
    return wheel


@pytest.fixture(scope="module")
def node_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A python like a cluster node's: this environment's packages, less ``NODE_LACKS``
    (a virtual environment whose one .pth names a folder of links to the rest)."""
    root = tmp_path_factory.mktemp("node")
    site = Path(sysconfig.get_paths()["purelib"])
    lacking = {f.parts[0] for name in NODE_LACKS
               for f in importlib.metadata.distribution(name).files or []}  # fmt: skip
    farm = root / "packages"
    farm.mkdir()
    for entry in site.iterdir():
        if entry.name not in lacking and not entry.name.endswith(".pth"):
            (farm / entry.name).symlink_to(entry)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", root / "env"], check=True)
    python = root / "env" / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    node_site = subprocess.run([python, "-c", purelib], capture_output=True, text=True, check=True)
    (Path(node_site.stdout.strip()) / "node.pth").write_text(f"{farm}\n")
    return python


def gpu_check(python: Path, wheels: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        ["bash", REPO_ROOT / "benchmarks" / "gpu_check.sh", "--device", "cpu", *args],
        env={**env, "PYTHON": str(python), "WHEELS": str(wheels)},
        cwd=wheels.parent, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_summary_holds_the_medians_and_median_ratios() -> None:
    rounds = [
        [Throughput("(a)", 100, 500), Throughput("(b)", 80, 510), Throughput("(c)", 50, 520)],
        [Throughput("(a)", 200, 600), Throughput("(b)", 100, 610), Throughput("(c)", 40, 620)],
    ]
    result = summary(rounds)
    assert [w["clips_per_s"] for w in result["ways"]] == [150, 90, 45]
    assert result["ways"][1] == {"name": "(b)", "clips_per_s": 90, "peak_mib": 510,
                                 "epoch_s": pytest.approx(16_963 / 90)}  # fmt: skip
    assert result["median_ratios"] == pytest.approx({"b/a": 0.65, "c/a": 0.35, "b/c": 2.05})


def test_the_node_lacks_what_the_script_must_install(node_python: Path, tmp_path: Path) -> None:
    """Without the wheels it stops in one line that says where to put which ones."""
    probe = "import importlib.util as u; print(u.find_spec('torch') is not None, " \
            "u.find_spec('hydra') is None, u.find_spec('soundfile') is None)"  # fmt: skip
    found = subprocess.run([node_python, "-c", probe], capture_output=True, text=True)
    assert found.stdout.split() == ["True", "True", "True"], found.stderr
    (tmp_path / "wheels").mkdir()
    result = gpu_check(node_python, tmp_path / "wheels")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("gpu_check: error: no wheel of hydra-core omegaconf")
    assert f"(Python {sys.version_info.major}.{sys.version_info.minor}." in last
    assert f"in {tmp_path / 'wheels'}" in last and "as the header of" in last


@pytest.mark.slow
def test_the_check_installs_from_wheels_and_prints_every_row(node_python: Path,
                                                             tmp_path: Path) -> None:  # fmt: skip
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name in NODE_LACKS:
        repack_wheel(name, wheels)
    result = gpu_check(node_python, wheels, "--clips", "20", "--steps", "1", "--rounds", "1",
                       "data.n_subclips=2")  # fmt: skip
    assert "lacks hydra-core omegaconf antlr4-python3-runtime soundfile soxr cffi pycparser; " \
        f"installing from {wheels}" in result.stderr  # fmt: skip
    table = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| setting | overrides | (a) step clips/s | (b) loop clips/s")
    rows = {line.split(" | ")[0].removeprefix("| "): line for line in table[1:]}
    assert tuple(rows) == ROWS
    has_augment = (REPO_ROOT / "conf" / "augment" / "standard.yaml").is_file()
    for label, line in rows.items():
        if label == "augment" and not has_augment:  # the preset is not in this checkout yet
            assert "failed" in line
            continue
        cells = line.strip("| ").split(" | ")
        figures = [float(cell.rstrip("%x")) for cell in cells[2:]]
        assert len(figures) == 8 and all(f > 0 for f in figures), line
        assert re.fullmatch(r"\d+%", cells[6]) and re.fullmatch(r"[\d.]+x", cells[7])
    assert result.returncode == (0 if has_augment else 1), result.stderr[-3000:]
