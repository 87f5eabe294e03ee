"""tagger as an installed package: the configs ship in the wheel, every command runs from any
directory, users add their own configs by a search path, and a first run prints no library
deprecation notices."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile

from tagger.cli.hydra_setup import check_group_choices, user_config_dirs
from tagger.config import CONFIG_DIR
from tagger.errors import ConfigError
from tests.conftest import REPO_ROOT, TINY, run_cli

#: A user's own network, in the user's own module (not in tagger).
USER_MODULE = '''
from torch import nn


class TinyNet(nn.Sequential):
    """Raw audio [batch, 1, samples] -> one logit per tag [batch, num_tags]."""

    def __init__(self, num_tags: int, filters: int = 8) -> None:
        super().__init__(
            nn.Conv1d(1, filters, kernel_size=256, stride=256), nn.ReLU(),
            nn.AdaptiveMaxPool1d(1), nn.Flatten(), nn.Linear(filters, num_tags),
        )
'''
#: The user's model config: ``model=tiny`` once their config dir is on the search path.
USER_MODEL_CONFIG = """\
_target_: tagger.module.TaggingModule
aggregation: mean_logits
input_scale: 32768.0
net:
  _target_: my_models.TinyNet
  filters: 8
"""
QUIET = ["trainer.enable_progress_bar=false", "trainer.enable_model_summary=false"]


def write_user_configs(root: Path) -> tuple[Path, Path]:
    """``root/my_models.py`` and ``root/my_conf/model/tiny.yaml``; returns both folders."""
    (root / "my_conf" / "model").mkdir(parents=True)
    (root / "my_conf" / "model" / "tiny.yaml").write_text(USER_MODEL_CONFIG)
    (root / "my_models.py").write_text(USER_MODULE)
    return root, root / "my_conf"


def test_every_package_ships_with_the_configs() -> None:
    tomllib = pytest.importorskip("tomllib")
    setuptools = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    packages = {
        ".".join(path.parent.relative_to(REPO_ROOT).parts)
        for path in (REPO_ROOT / "tagger").rglob("__init__.py")
    }
    assert set(setuptools["packages"]) == packages | {"tagger.conf"}
    assert setuptools["package-dir"] == {"tagger.conf": "conf"}
    # from a clone the configs are the repository's own conf/
    assert Path(CONFIG_DIR) == REPO_ROOT / "conf"


def test_group_choices_are_also_looked_up_in_user_config_dirs(tmp_path: Path) -> None:
    _, conf = write_user_configs(tmp_path)
    assert user_config_dirs(["--config-dir", str(conf), "model=tiny"]) == [conf]
    assert user_config_dirs([f"hydra.searchpath=[file://{conf},{tmp_path}]"]) == [conf, tmp_path]
    assert user_config_dirs(["hydra.searchpath=[pkg://my_package.conf]"]) is None
    check_group_choices([f"--config-dir={conf}", "model=tiny,baseline"])
    check_group_choices([f"hydra.searchpath=[file://{conf}]", "model=tiny"])
    with pytest.raises(ConfigError, match=f"choose one of: .*tiny.* or {conf}/model/"):
        check_group_choices(["-cd", str(conf), "model=tinny"])
    with pytest.raises(ConfigError, match="unknown model 'tiny'"):
        check_group_choices(["model=tiny"])


def test_only_the_named_library_notice_is_filtered() -> None:
    """Importing the command-line layer filters Lightning's LeafSpec notice and nothing else
    (run in a fresh interpreter: pytest resets the warning filters around each test)."""
    probe = """
import warnings

import tagger.cli
message = "`isinstance(treespec, LeafSpec)` is deprecated, use ... instead."
with warnings.catch_warnings(record=True) as caught:
    for module in ("lightning.pytorch.utilities._pytree", "my_code"):
        warnings.warn_explicit(message, FutureWarning, "x.py", 1, module=module)
    warnings.warn_explicit("other", FutureWarning, "x.py", 1, module="lightning.pytorch")
print([str(w.message)[:10] for w in caught])
"""
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    assert result.stdout.strip() == "['`isinstanc', 'other']"


@pytest.mark.slow
def test_a_first_run_prints_no_library_deprecation_warning(tmp_path: Path) -> None:
    result = run_cli(str(REPO_ROOT / "train.py"), *TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "final val/auc" in result.stdout
    output = result.stdout + result.stderr
    for text in ("deprecated", "DeprecationWarning", "FutureWarning"):
        assert text not in output, output


def build_wheel_into(site: Path, work: Path) -> None:
    """Build tagger's wheel from a copy of its sources and install it, alone, into ``site``."""
    source = work / "source"
    for name in ("pyproject.toml", "README.md"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO_ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("tagger", "conf"):
        shutil.copytree(REPO_ROOT / name, source / name, ignore=ignore)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    offline = ["--no-deps", "--no-index", "-q"]
    built = subprocess.run(
        [*pip, "wheel", *offline, "--no-build-isolation", "-w", str(work / "wheel"), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    (wheel,) = (work / "wheel").glob("tagger-*.whl")
    installed = subprocess.run(
        [*pip, "install", *offline, "--target", str(site), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr[-3000:]


@pytest.mark.slow
def test_an_installed_wheel_runs_every_command_from_another_directory(tmp_path: Path) -> None:
    """The wheel alone (torch and the rest from this environment), started outside the
    repository: train, models, eval, prepare, report, and a user's own model config."""
    site, here = tmp_path / "site", tmp_path / "elsewhere"
    build_wheel_into(site, tmp_path / "build")
    user, conf = write_user_configs(tmp_path / "user")
    here.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "HYDRA_FULL_ERROR": "0"}

    def tagger(*args: str, pythonpath: str = str(site)) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [str(site / "bin" / "tagger"), *args], cwd=here, env={**env, "PYTHONPATH": pythonpath},
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, (args, result.stderr[-3000:])
        return result

    where = subprocess.run(
        [sys.executable, "-c", "import tagger.config as c; print(c.__file__); print(c.CONFIG_DIR)"],
        cwd=here, env=env, capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert where == [str(site / "tagger" / "config.py"), str(site / "tagger" / "conf")]
    # the page of tagger export --format web ships as package data (tagger.web.PAGE_FILES)
    assert sorted(p.name for p in (site / "tagger" / "page").iterdir()) == [
        "app.js", "index.html", "style.css",
    ]  # fmt: skip

    tagger("train", *TINY, "data.n_subclips=1")
    (run,) = (here / "outputs" / "train" / "runs").iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 1
    table = tagger("models").stdout
    assert {row.split("|")[1].strip(" `") for row in table.splitlines()[2:] if row[:1] == "|"} == {
        path.stem for path in (REPO_ROOT / "conf" / "model").glob("*.yaml")
    }

    last = run / "checkpoints" / "last.ckpt"
    tagger("eval", f"ckpt_path={last}", *QUIET)
    assert len(list((here / "outputs" / "eval" / "runs").glob("*/metrics.json"))) == 1
    (here / "audio").mkdir()
    for name in ("a", "b"):
        soundfile.write(here / "audio" / f"{name}.wav", np.zeros(8000, np.float32), 8000)
    (here / "audio" / "labels.csv").write_text("path,tags,split\na.wav,x,train\nb.wav,y,val\n")
    tagger("prepare", "folder", "--root", "audio", "--labels", "audio/labels.csv",
           "--out", "store", "--sample-rate", "8000", "--clip-seconds", "0.5")  # fmt: skip
    assert (here / "store" / "meta.json").is_file()
    tagger("report", "outputs/train/runs")
    assert (here / "outputs" / "train" / "runs" / "report.csv").is_file()

    # a user's own model config and module, outside the package: trains with --config-dir,
    # and composes the same with hydra.searchpath
    user_path = f"{site}{os.pathsep}{user}"
    tagger("train", f"--config-dir={conf}", "model=tiny", *TINY, "data.n_subclips=1",
           "hydra.run.dir=outputs/user", pythonpath=user_path)  # fmt: skip
    metrics = json.loads((here / "outputs" / "user" / "metrics.json").read_text())
    assert metrics["config"]["model"]["net"]["_target_"] == "my_models.TinyNet"
    composed = tagger("train", f"hydra.searchpath=[file://{conf}]", "model=tiny", "--cfg", "job")
    assert "_target_: my_models.TinyNet" in composed.stdout
