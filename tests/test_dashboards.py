"""TensorBoard dashboards (``tagger.dashboards``): a sweep is one HParams table whose values
are the runs' own (read back from a real TensorBoard server's HTTP API), with PR curves per
tag and figures in each run's events; nothing at all without a TensorBoard logger."""

from __future__ import annotations

import json
import queue
import re
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tagger.dashboards import HPARAMS, METRICS, hparam_value
from tests.conftest import REPO_ROOT, TINY, compose_config, run_cli, run_tagger

#: ``TINY`` with the dashboards, which the other tests leave out.
DASHBOARDS_TINY = [o for o in TINY if o != "~callbacks.dashboards"]

#: The statuses TensorBoard's own HParams page asks for.
STATUSES = ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"]


def test_hparam_values_are_choices_numbers_or_text() -> None:
    choices = {"model": "baseline", "scheduler": None}
    config = {"optimizer": {"lr": 0.01}, "conv": {"length": 256}, "test": True,
              "tags": ["dev"]}  # fmt: skip
    assert hparam_value("model", choices, config) == "baseline"
    assert hparam_value("scheduler", choices, config) == "none"
    assert hparam_value("optimizer.lr", choices, config) == 0.01
    assert hparam_value("conv.length", choices, config) == 256
    assert hparam_value("test", choices, config) == "true"
    assert hparam_value("tags", choices, config) == "['dev']"
    assert hparam_value("optimizer.momentum", choices, config) == "none"


@pytest.fixture
def tensorboard() -> Iterator[callable]:
    """``tensorboard(logdir)``: a TensorBoard server on a free loopback port (the URL);
    every server started is stopped at the end."""
    servers: list[subprocess.Popen] = []

    def start(logdir: Path) -> str:
        server = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(logdir),
             "--host", "127.0.0.1", "--port", "0", "--load_fast=false"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        servers.append(server)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in server.stderr],
                         daemon=True).start()  # fmt: skip
        deadline, said = time.monotonic() + 120, []
        while time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                assert server.poll() is None, f"tensorboard ended: {''.join(said)}"
                continue
            said.append(line)
            found = re.search(r"at (http://127\.0\.0\.1:\d+)/", line)
            if found:
                return found.group(1)
        raise AssertionError(f"tensorboard did not start in 120 s: {''.join(said)}")

    yield start
    for server in servers:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def _session_groups(url: str, runs: int) -> list[dict]:
    """The HParams session groups, once TensorBoard has loaded ``runs`` sessions and
    every one of their metrics (it reads the event files in the background)."""
    body = {"experimentName": "", "allowedStatuses": STATUSES, "startIndex": 0,
            "sliceSize": 100, "includeMetrics": True}  # fmt: skip
    deadline = time.monotonic() + 120
    while True:
        groups = _post(f"{url}/data/plugin/hparams/session_groups", body).get("sessionGroups", [])
        sessions = [s for g in groups for s in g["sessions"]]
        if len(sessions) == runs and all(len(s.get("metricValues", [])) == len(METRICS)
                                         for s in sessions):  # fmt: skip
            return groups
        assert time.monotonic() < deadline, f"tensorboard shows {groups}"
        time.sleep(1)


@pytest.mark.slow  # a two-run sweep and a TensorBoard server
def test_a_sweep_is_one_hparams_table_with_pr_curves_and_figures(tmp_path: Path,
                                                                 tensorboard) -> None:  # fmt: skip
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    result = run_tagger("train", "-m", "seed=1,2", *DASHBOARDS_TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    (sweep,) = (tmp_path / "outputs" / "train" / "multiruns").iterdir()
    runs = {path.parent.name: json.loads(path.read_text())
            for path in sorted(sweep.glob("*/metrics.json"))}  # fmt: skip
    assert len(runs) == 2 and all(run["status"] == "completed" for run in runs.values())

    url = tensorboard(sweep)
    experiment = _post(f"{url}/data/plugin/hparams/experiment",
                       {"experimentName": "", "includeMetrics": True})  # fmt: skip
    assert [h["name"] for h in experiment["hparamInfos"]] == sorted(HPARAMS)
    assert sorted(m["name"]["tag"] for m in experiment["metricInfos"]) == sorted(METRICS)

    groups = _session_groups(url, runs=2)
    seen = set()
    for group in groups:
        (session,) = group["sessions"]
        job = session["name"].split("/")[0]  # <job>/tensorboard
        run, seen = runs[job], seen | {job}
        config = run["config"]
        assert session["status"] == "STATUS_SUCCESS"
        assert group["hparams"] == {
            "model": "baseline", "optimizer": "sgd", "data": "synthetic", "augment": "none",
            "scheduler": "none", "experiment": "none",
            "seed": config["seed"], "conv.length": config["conv"]["length"],
            "conv.stride": config["conv"]["stride"], "optimizer.lr": config["optimizer"]["lr"],
            "optimizer.weight_decay": config["optimizer"]["weight_decay"],
            "model.aggregation": config["model"]["aggregation"],
            "data.batch_size": config["data"]["batch_size"],
            "data.n_subclips": config["data"]["n_subclips"],
            "data.subclip_len": config["data"]["subclip_len"],
            "trainer.max_epochs": config["trainer"]["max_epochs"],
        }  # fmt: skip
        metrics = {m["name"]["tag"]: m["value"] for m in session["metricValues"]}
        assert metrics == {"val/auc": run["val"]["auc"], "val/pr_auc": run["val"]["pr_auc"],
                           "test/auc": run["test"]["auc"],
                           "test/pr_auc": run["test"]["pr_auc"]}  # fmt: skip
    assert seen == set(runs)
    assert {g["hparams"]["seed"] for g in groups} == {1, 2}

    for job, run in runs.items():
        events = EventAccumulator(str(sweep / job / "tensorboard"),
                                  size_guidance={"images": 0, "tensors": 0})  # fmt: skip
        events.Reload()
        tags = events.Tags()
        for split in ("val", "test"):
            scored = [n for n in run["tag_names"] if n not in run[split]["skipped_tags"]]
            assert scored
            curves = {t for t in tags["tensors"] if t.startswith(f"{split}_pr_curve/")}
            assert curves == {f"{split}_pr_curve/{name}" for name in scored}
            for name in scored:  # [6 rows: TP, FP, TN, FN, precision, recall; thresholds]
                (curve,) = events.Tensors(f"{split}_pr_curve/{name}")
                assert curve.tensor_proto.tensor_shape.dim[0].size == 6
            images = [t for t in tags["images"] if t.startswith(f"{split}_")]
            assert f"{split}_figures/per_tag_auc" in images
            assert len([t for t in images if t.startswith(f"{split}_taggram/")]) == 2
            for tag in images:
                (image,) = events.Images(tag)
                assert image.encoded_image_string.startswith(b"\x89PNG")
                assert image.width > 100 and image.height > 100


@pytest.mark.slow  # trains the tiny model
def test_without_tensorboard_the_dashboards_do_nothing(tmp_path: Path) -> None:
    from tagger.train import train

    cfg = compose_config("train", tmp_path / "run", [*DASHBOARDS_TINY, "logger=csv"])
    assert cfg.callbacks.dashboards is not None
    summary = train(cfg)
    run_dir = Path(cfg.paths.output_dir)
    assert summary["status"] == "completed" and "test" in summary
    assert (run_dir / "csv" / "metrics.csv").is_file()
    assert not (run_dir / "tensorboard").exists()
    assert not list(run_dir.rglob("events.out.tfevents*"))


@pytest.mark.slow  # two processes train the tiny model
def test_under_ddp_process_0_writes_the_curves_of_every_clip(tmp_path: Path) -> None:
    """Two CPU processes (gloo): one writer, and each PR curve counts the clips of both."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    result = run_cli(str(REPO_ROOT / "train.py"), *DASHBOARDS_TINY, "trainer=ddp",
                     "trainer.accelerator=cpu", "trainer.devices=2", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    (metrics_file,) = (tmp_path / "outputs" / "train" / "runs").glob("*/metrics.json")
    run = json.loads(metrics_file.read_text())
    files = list(metrics_file.parent.rglob("events.out.tfevents*"))  # fit's, then test's
    assert {f.parent.name for f in files} == {"tensorboard"}
    assert len({f.name.split(".")[-2] for f in files}) == 1  # one pid: ...<host>.<pid>.<n>
    events = EventAccumulator(str(files[0].parent), size_guidance={"tensors": 0})
    events.Reload()
    for split in ("val", "test"):
        scored = [n for n in run["tag_names"] if n not in run[split]["skipped_tags"]]
        for name in scored:
            (curve,) = events.Tensors(f"{split}_pr_curve/{name}")
            tp, fp, tn, fn = tensor_util.make_ndarray(curve.tensor_proto)[:4, 0]
            assert tp + fp + tn + fn == run[f"{split}_clips"], (split, name)
    assert {"val_figures/per_tag_auc", "test_figures/per_tag_auc"} <= set(events.Tags()["images"])
    assert "_hparams_/session_start_info" in events.PluginTagToContent("hparams")
