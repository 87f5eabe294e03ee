"""``tagger embed``: vectors from the layer before the output, of audio files and of a store's
clips, averaged per input or one per window, and what a linear model learns from them."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile
import torch
from torch import nn

from tagger.cli.models import compose_model
from tagger.cli.prepare import prepare
from tagger.data.synthetic import SYNTHETIC_TAGS, synthesize_split
from tagger.embed import Embedder, output_paths
from tagger.models.dieleman import DielemanCNN
from tagger.models.parts import output_layer
from tagger.module import build_module
from tagger.predict import Tagger
from tagger.zoo import model_names
from tests.conftest import run_tagger

#: The tiny checkpoint's data (tests/conftest.py's TINY on the built-in synthetic clips).
RATE, CLIP_SAMPLES, DATA_SEED = 12_000, 2 * 4096, 1234
#: The zoo's embedding widths with its configs' defaults (docs/inference.md).
WIDTHS = {"baseline": 100, "spectrogram": 100, "wide": 100, "hybrid": 100, "samplecnn": 512,
          "rese2": 1024}  # fmt: skip
NARROW = ["model.net.channels=[32,32,32,64,64,64,64,64,64,128]"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The tiny checkpoint's 60 training clips and 40 clips it never saw (its data's test
    split) as 16-bit wav files at its rate, and a store prepared from them (each file whole,
    the splits kept): (audio folder, store)."""
    root = tmp_path_factory.mktemp("synthetic")
    audio = root / "audio"
    audio.mkdir()
    rows = ["path,tags,split"]
    for split, n_clips in (("train", 60), ("test", 40)):
        clips, labels = synthesize_split(split, n_clips, CLIP_SAMPLES, RATE, DATA_SEED)
        for i, (clip, tags) in enumerate(zip(clips, labels, strict=True)):
            name = f"{split}{i:03d}.wav"
            soundfile.write(audio / name, clip, RATE, subtype="PCM_16")
            named = ";".join(tag for tag, y in zip(SYNTHETIC_TAGS, tags, strict=True) if y)
            rows.append(f"{name},{named},{split}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    store = prepare(["folder", "--root", str(audio), "--labels", str(root / "labels.csv"),
                     "--out", str(root / "store"), "--sample-rate", str(RATE),
                     "--clip-seconds", "none", "--workers", "1"])  # fmt: skip
    return audio, store


@pytest.fixture(scope="module")
def songs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2.5 s tone (7 windows of the tiny model), a file shorter than one window, a
    22.05 kHz stereo one, and a file that is not audio."""
    folder = tmp_path_factory.mktemp("songs")
    t = np.arange(30_000) / RATE
    soundfile.write(folder / "long.wav", 0.3 * np.sin(2 * np.pi * 440 * t), RATE)
    soundfile.write(folder / "short.flac", 0.3 * np.sin(2 * np.pi * 220 * t[:1_000]), RATE)
    t = np.arange(33_075) / 22_050
    tone = 0.2 * np.sin(2 * np.pi * 330 * t)
    soundfile.write(folder / "stereo.wav", np.stack([tone, tone], axis=1), 22_050)
    (folder / "broken.mp3").write_bytes(b"not audio at all" * 64)
    return folder


def read_index(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def embed(*args: str | Path) -> tuple[np.ndarray, list[dict[str, str]], str]:
    """``tagger embed ... --out`` (given last): the array, the index rows, stderr; it must
    have written both files."""
    result = run_tagger("embed", *args)
    assert result.returncode in (0, 1), result.stderr
    npy, index = output_paths(Path(args[-1]))
    assert f"wrote {npy} (" in result.stdout
    return np.load(npy), read_index(index), result.stderr


def test_one_finite_vector_per_file_named_in_the_index(
    tiny_checkpoint: Path, songs: Path, tmp_path: Path
) -> None:
    result = run_tagger("embed", tiny_checkpoint, songs, "--out", tmp_path / "e.npy")
    assert result.returncode == 1  # broken.mp3 skipped, the others embedded
    assert f"tagger embed: skipped {songs / 'broken.mp3'}: unreadable" in result.stderr
    assert "tagger embed: 1 of 4 inputs skipped" in result.stderr
    vectors, rows = np.load(tmp_path / "e.npy"), read_index(tmp_path / "e.csv")
    assert vectors.dtype == np.float32 and vectors.shape == (3, WIDTHS["baseline"])
    assert np.isfinite(vectors).all()
    assert [row["input"] for row in rows] == [str(songs / n) for n in
                                              ("long.wav", "short.flac", "stereo.wav")]  # fmt: skip
    assert list(rows[0]) == ["input"]
    assert len(np.unique(vectors, axis=0)) == 3  # three sounds, three vectors
    assert result.stdout == f"wrote {tmp_path / 'e.npy'} (3 inputs x 100, float32) and " \
                            f"{tmp_path / 'e.csv'}\n"  # fmt: skip


def test_per_window_rows_are_predicts_windows(
    tiny_checkpoint: Path, songs: Path, tmp_path: Path
) -> None:
    files = [songs / name for name in ("long.wav", "short.flac", "stereo.wav")]
    predicted = json.loads(run_tagger("predict", tiny_checkpoint, *files, "--format",
                                      "json").stdout)["files"]  # fmt: skip
    means, _, _ = embed(tiny_checkpoint, *files, "--out", tmp_path / "mean")
    windows, rows, _ = embed(tiny_checkpoint, *files, "--per-window", "--out", tmp_path / "win")
    assert [entry["windows"] for entry in predicted] == [7, 1, 4]  # 30,000 and 18,000 // 4,096
    assert len(windows) == len(rows) == 12 and list(rows[0]) == ["input", "start_s"]
    at = 0
    for path, entry, mean in zip(files, predicted, means, strict=True):
        mine = [row for row in rows if row["input"] == str(path)]
        assert len(mine) == entry["windows"]
        assert [float(row["start_s"]) for row in mine] == pytest.approx(
            np.arange(len(mine)) * 4096 / RATE, abs=1e-6
        )
        np.testing.assert_allclose(windows[at : at + len(mine)].mean(axis=0), mean, atol=1e-5)
        at += len(mine)

    # with a hop: the rows of predict's taggram, window for window
    taggrams = tmp_path / "taggrams"
    run_tagger("predict", tiny_checkpoint, files[0], "--taggram", taggrams, "--hop", "0.1")
    taggram = read_index(taggrams / "long.wav.taggram.csv")
    hopped, rows, _ = embed(tiny_checkpoint, files[0], "--per-window", "--hop", "0.1",
                            "--out", tmp_path / "hop")  # fmt: skip
    assert len(hopped) == len(rows) == len(taggram) == 1 + (30_000 - 4096) // 1200
    assert [row["start_s"] for row in rows] == [row["start_s"] for row in taggram]
    assert np.isfinite(hopped).all()


def test_a_stores_clips_embed_as_their_audio_files_do(
    tiny_checkpoint: Path, synthetic: tuple[Path, Path], tmp_path: Path
) -> None:
    audio, store = synthetic
    from_store, rows, _ = embed(tiny_checkpoint, "--store", store, "--split", "test",
                                "--out", tmp_path / "store")  # fmt: skip
    assert list(rows[0]) == ["input", "path", "tags"] and len(rows) == len(from_store) == 40
    files = [audio / row["path"] for row in rows]
    from_files, file_rows, _ = embed(tiny_checkpoint, *files, "--out", tmp_path / "files")
    assert [row["input"] for row in file_rows] == list(map(str, files))
    np.testing.assert_allclose(from_store, from_files, rtol=0, atol=1e-6)
    windows, window_rows, _ = embed(tiny_checkpoint, "--store", store, "--split", "test",
                                    "--per-window", "--out", tmp_path / "windows")  # fmt: skip
    assert len(windows) == len(window_rows) == 40 * 2  # 8,192 samples: 2 windows each
    assert {row["start_s"] for row in window_rows} == {"0.000000", f"{4096 / RATE:.6f}"}


def test_a_linear_model_on_embeddings_tells_a_tag_on_held_out_clips(
    tiny_checkpoint: Path, synthetic: tuple[Path, Path], tmp_path: Path
) -> None:
    """A logistic regression fitted on the embeddings of the clips the checkpoint trained on
    ranks the 40 clips of the test split by `loud` far above chance."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    _, store = synthetic
    split = {}
    for name in ("train", "test"):
        vectors, rows, _ = embed(tiny_checkpoint, "--store", store, "--split", name,
                                 "--out", tmp_path / name)  # fmt: skip
        split[name] = vectors, np.array(["loud" in row["tags"].split(";") for row in rows])
    (x_train, y_train), (x_test, y_test) = split["train"], split["test"]
    assert 0 < y_train.sum() < len(y_train) and 0 < y_test.sum() < len(y_test)
    model = LogisticRegression(max_iter=1000).fit(x_train, y_train)
    assert roc_auc_score(y_test, model.decision_function(x_test)) > 0.85


@pytest.mark.parametrize("name", sorted(WIDTHS))
def test_every_network_of_the_zoo_gives_its_output_layers_input(name: str) -> None:
    """One mechanism for the six networks: the vector is what the output layer reads, so
    the layer maps it to the window's logits; its width is the one the docs give."""
    assert sorted(WIDTHS) == model_names()
    torch.manual_seed(0)
    cfg = compose_model(name, NARROW if name in ("samplecnn", "rese2") else ())
    module = build_module(cfg, list(SYNTHETIC_TAGS)).eval()
    window = int(cfg.data.subclip_len)
    embedder = Embedder(Tagger(module, int(cfg.data.sample_rate), window, "cpu"))
    samples = np.random.default_rng(0).uniform(-0.5, 0.5, 2 * window + 100).astype(np.float32)
    vectors = embedder.window_vectors(samples)
    layer = output_layer(module.net)
    assert vectors.shape == (2, layer.in_features) and np.isfinite(vectors).all()
    audio = torch.from_numpy(samples[: 2 * window]).view(1, 2, 1, window) * 32768.0
    with torch.inference_mode():
        np.testing.assert_allclose(layer(torch.from_numpy(vectors)).numpy(),
                                   module(audio)[0].numpy(), atol=1e-4)  # fmt: skip
    if name not in ("samplecnn", "rese2"):  # the narrow ones: their width at the defaults
        assert layer.in_features == WIDTHS[name]


def test_the_sample_level_widths_at_their_defaults() -> None:
    for name in ("samplecnn", "rese2"):
        module = build_module(compose_model(name), list(SYNTHETIC_TAGS))
        assert output_layer(module.net).in_features == WIDTHS[name]


def test_out_names_both_files() -> None:
    for out in ("e", "e.npy", "e.csv", "e.NPY"):
        assert output_paths(Path("d") / out) == (Path("d/e.npy"), Path("d/e.csv"))
    assert output_paths(Path("v1.2")) == (Path("v1.2.npy"), Path("v1.2.csv"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give audio files or folders, or --store STORE --split SPLIT"),
        (["{song}", "--store", "{store}", "--split", "test"], "give audio files or --store, not"),
        (["--store", "{store}"], "--store and --split go together"),
        (["{song}", "--split", "test"], "--store and --split go together"),
        (["{song}", "--hop", "0.1"], "--hop sets the windows of --per-window"),
        (["{song}", "--per-window", "--hop", "nan"], "argument --hop: must be"),
        (["{song}", "--per-window", "--hop", "1"], "--hop 1.0 is 12000 samples at the model's"),
        (["{song}", "--out", "{tmp}"], "is a folder; give a file name"),
        (["{song}", "--device", "tpu"], "argument --device: invalid choice"),
        (["--store", "{store}", "--split", "val"], "--split val: the store"),
        (["--store", "{tmp}", "--split", "test"], "is not a clip store"),
        (["{tmp}/none.wav", "{tmp}"], "is a folder with no .wav"),
    ],
)  # fmt: skip
def test_bad_arguments_are_one_line_and_exit_2(
    tiny_checkpoint: Path, synthetic: tuple[Path, Path], songs: Path, tmp_path: Path,
    args: list[str], message: str,
) -> None:  # fmt: skip
    _, store = synthetic
    where = {"song": songs / "long.wav", "store": store, "tmp": tmp_path}
    args = [arg.format(**where) for arg in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "e")]
    result = run_tagger("embed", tiny_checkpoint, *args)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    (error,) = [line for line in result.stderr.splitlines() if "error:" in line]
    assert error == result.stderr.strip().splitlines()[-1] and message in error, result.stderr
    assert not list(tmp_path.glob("e.*"))


def test_a_bad_checkpoint_or_a_store_at_another_rate_exit_2(
    tiny_checkpoint: Path, synthetic: tuple[Path, Path], songs: Path, tmp_path: Path
) -> None:
    result = run_tagger("embed", tmp_path / "none.ckpt", songs, "--out", tmp_path / "e")
    assert result.returncode == 2 and result.stderr.startswith("tagger embed: error: ")
    assert len(result.stderr.strip().splitlines()) == 1
    audio = synthetic[0]
    (tmp_path / "labels.csv").write_text("path,tags,split\ntrain000.wav,loud,train\n"
                                         "test000.wav,,test\n")  # fmt: skip
    other = prepare(["folder", "--root", str(audio), "--labels", str(tmp_path / "labels.csv"),
                     "--out", str(tmp_path / "store16k"), "--clip-seconds", "none",
                     "--workers", "1"])  # fmt: skip
    result = run_tagger("embed", tiny_checkpoint, "--store", other, "--split", "test", "--out",
                        tmp_path / "e")  # fmt: skip
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "holds 16000 Hz audio, but the checkpoint's model takes 12000 Hz" in result.stderr


def test_an_output_that_cannot_be_written_is_one_line_and_exit_1(
    tiny_checkpoint: Path, songs: Path, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("a file, not a folder")
    result = run_tagger("embed", tiny_checkpoint, songs / "long.wav", "--out",
                        tmp_path / "file" / "e")  # fmt: skip
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert f"{tmp_path / 'file'} is a file where a folder should be" in line
    assert not [p.name for p in tmp_path.iterdir() if p.name != "file"]


class HeadlessCNN(DielemanCNN):
    """The baseline with its dense layers in a ``ModuleList`` (the same weights): a network
    of the user's own with no ``classifier[-1]`` to read."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.classifier = nn.ModuleList(self.classifier)  # type: ignore[assignment]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x)
        for layer in self.classifier:
            x = layer(x)
        return x


def test_the_checkpoint_passes_predicts_gates(
    tiny_checkpoint: Path, songs: Path, tmp_path: Path
) -> None:
    """A network the checkpoint names outside the allowlist is refused before it is built;
    trusted (``--trust-module``), it is built, and one without an output layer to read is
    refused in one line."""
    contents = torch.load(tiny_checkpoint, weights_only=True)
    contents["hyper_parameters"]["net"]["_target_"] = f"{__name__}.HeadlessCNN"
    planted = tmp_path / "headless.ckpt"
    torch.save(contents, planted)
    song = songs / "long.wav"
    trusted = ["--trust-module", __name__]
    for trust, message in (([], "HeadlessCNN"), (trusted, "no output layer net.classifier[-1]")):
        result = run_tagger("embed", planted, song, "--out", tmp_path / "e", *trust)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("tagger embed: error: ") and message in line, line
    assert not list(tmp_path.glob("e.*"))


def test_a_long_run_shows_a_progress_bar_on_stderr(
    tiny_checkpoint: Path, songs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bar waits ``PROGRESS_DELAY_S`` (none shows for a short run: the tests above);
    without the wait it counts the inputs on stderr, and stdout stays one line."""
    monkeypatch.setattr("tagger.cli.embed.PROGRESS_DELAY_S", 0)
    result = run_tagger("embed", tiny_checkpoint, songs / "long.wav", songs / "stereo.wav",
                        "--out", tmp_path / "e")  # fmt: skip
    assert result.returncode == 0 and "embed: 100%" in result.stderr and "2/2" in result.stderr
    assert result.stdout.count("\n") == 1
