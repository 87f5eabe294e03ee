"""A bundle: a trained tagger as a folder that tags audio without torch (``tagger export CKPT
--format bundle --out DIR``; ``tagger predict DIR FILES``).

The folder holds three files, written together by ``tagger.export.export_bundle``:

* ``model.onnx``: raw audio windows [batch, n_windows, 1, window_length], float32 on the
  int16 scale (samples in [-1, 1] times ``input_scale``) -> each window's tag logits
  [batch, n_windows, K] (input ``audio``, output ``logits``; batch and n_windows dynamic).
* ``tagger.json``: what it takes to feed the model and read its output: the tag names, the
  decision thresholds, the sample rate, window and hop, the aggregation of the windows'
  logits, the input scale; and where the model comes from: the data set and split it was
  trained and tested on, its test metrics when known, tagger's version (``Info``).
* ``MODEL_CARD.md``: the same for a reader (``model_card``): the data, the metrics per tag,
  the intended use and the limits.

A bundle is a file from someone else: ``tagger.json`` is read as plain data through one
schema (``check_info``), which checks every field's type and range and refuses a field it
does not know, a ``_target_`` key anywhere, a duplicate key and NaN, in one line naming the
field. Nothing in it names code; the model is run by onnxruntime alone.

This module imports numpy and tagger's torch-free modules only (onnxruntime when a bundle is
loaded), so that ``python -m tagger predict BUNDLE FILES`` runs in an environment holding
numpy, soundfile, soxr, onnxruntime and tagger (``pip install --no-deps``).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tagger.errors import ConfigError
from tagger.predictions import WINDOWS_PER_BATCH, Prediction, Taggram, window_view
from tagger.prepare.audio import read_audio
from tagger.settings import SAMPLE_RATE, Spec

#: The files of a bundle.
MODEL_FILE, INFO_FILE, CARD_FILE = "model.onnx", "tagger.json", "MODEL_CARD.md"
#: ``tagger.json``'s ``format`` and the one ``format_version`` this tagger reads.
FORMAT, FORMAT_VERSION = "tagger-bundle", 1
#: The ONNX model's input and output names.
INPUT_NAME, OUTPUT_NAME = "audio", "logits"
AGGREGATIONS = ("mean_logits", "mean_probs")
#: Every tag's threshold when the checkpoint stores none (rule "default").
DEFAULT_THRESHOLD = 0.5
#: A larger tagger.json is not read (a bundle's is kilobytes; MTAT's 50 tags, a few).
MAX_INFO_BYTES = 16 * 2**20
MAX_TAGS = 100_000
MAX_TEXT = 10_000
WINDOW = Spec("int", 1, 100_000_000, unit=" (samples per window)")
INPUT_SCALE = Spec("float", 0.0, 1e9, low_open=True)
PROBABILITY = Spec("float", 0.0, 1.0)
CLIPS = Spec("int", 0, 10**12, unit=" (clips)")
PARAMETERS = Spec("int", 0, 10**13, unit=" (parameters)")
#: Every field of tagger.json: its top-level keys, in the order written.
FIELDS = (
    "format", "format_version", "tagger_version", "input", "output", "tag_names",
    "thresholds", "sample_rate", "window_length", "hop_length", "aggregation", "input_scale",
    "model", "data", "test_metrics", "checkpoint",
)  # fmt: skip
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Info:
    """A checked ``tagger.json``: the fields a tagger needs, and the whole document."""

    tag_names: list[str]
    thresholds: dict[str, float]
    threshold_rule: str
    sample_rate: int
    window_length: int
    hop_length: int
    aggregation: str
    input_scale: float
    document: dict[str, Any]


class _Schema:
    """The checks of one document, each naming ``source`` and the field in one line."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.source}: {key} {problem}")

    def mapping(self, key: str, value: Any, fields: tuple[str, ...],
                required: tuple[str, ...] | None = None) -> dict[str, Any]:  # fmt: skip
        """``value``, a JSON object holding only ``fields`` (all of ``required``, default
        all of them)."""
        if not isinstance(value, dict):
            raise self.fail(key, f"must be an object, not {_shown(value)}")
        unknown = [name for name in value if name not in fields]
        if unknown:
            where = f"{key}." if key != "tagger.json" else ""
            raise ConfigError(f"{self.source}: unknown field {where}{unknown[0]} (a bundle's "
                              f"fields: {', '.join(fields)})")  # fmt: skip
        missing = [name for name in (fields if required is None else required) if name not in value]
        if missing:
            raise self.fail(key, f"lacks the field {missing[0]}")
        return value

    def text(self, key: str, value: Any, empty: bool = False, null: bool = False) -> str | None:
        """A string of at most ``MAX_TEXT`` characters (may be empty, or null, if said)."""
        if value is None and null:
            return None
        if not isinstance(value, str) or len(value) > MAX_TEXT or (not value and not empty):
            raise self.fail(key, f"must be a{'' if empty else ' non-empty'} string of at most "
                            f"{MAX_TEXT} characters{' or null' if null else ''}, not "
                            f"{_shown(value)}")  # fmt: skip
        return value

    def name(self, key: str, value: Any) -> str:
        """A one-line name: non-empty text without control characters."""
        text = self.text(key, value)
        assert text is not None
        if _CONTROL.search(text) or len(text) > 200:
            raise self.fail(key, f"must be a name of at most 200 characters on one line, not "
                            f"{_shown(value)}")  # fmt: skip
        return text

    def number(self, key: str, value: Any, spec: Spec, null: bool = False) -> Any:
        if value is None and null:
            return None
        problem = spec.problem(value)
        if problem is not None:
            raise self.fail(key, problem + (" (or null)" if null else ""))
        return float(value) if spec.kind == "float" else value

    def boolean(self, key: str, value: Any, null: bool = False) -> bool | None:
        if (value is None and null) or isinstance(value, bool):
            return value
        raise self.fail(key, f"must be true or false{' or null' if null else ''}, "
                        f"not {_shown(value)}")  # fmt: skip

    def per_tag(self, key: str, value: Any, tags: list[str], spec: Spec,
                null: bool = False) -> dict[str, Any]:  # fmt: skip
        """An object with one number per tag of ``tags``, no other key."""
        if not isinstance(value, dict):
            raise self.fail(key, f"must be an object of one number per tag, not {_shown(value)}")
        if list(value) != tags:
            extra = [t for t in value if t not in tags]
            missing = [t for t in tags if t not in value]
            why = (f"names {extra[0]!r}, not a tag of tag_names" if extra else
                   f"lacks the tag {missing[0]!r}" if missing else "is not in tag_names' order")
            raise self.fail(key, why)
        return {tag: self.number(f"{key}.{tag}", v, spec, null) for tag, v in value.items()}


def _shown(value: Any) -> str:
    """A value in an error message: its JSON, cut short."""
    text = json.dumps(value) if isinstance(value, (str, int, float, bool, type(None))) else \
        type(value).__name__ if not isinstance(value, (dict, list)) else \
        ("an object" if isinstance(value, dict) else "a list")  # fmt: skip
    return text if len(text) <= 60 else text[:57] + "..."


def _target_key(value: Any, key: str = "") -> str | None:
    """The dotted key of the first ``_target_`` key anywhere in ``value``, else None."""
    if isinstance(value, dict):
        for name, child in value.items():
            here = f"{key}.{name}" if key else str(name)
            if name == "_target_":
                return here
            found = _target_key(child, here)
            if found:
                return found
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found = _target_key(child, f"{key}.{index}")
            if found:
                return found
    return None


def check_thresholds(
    value: Any, tags: list[str], source: str, key: str = "thresholds"
) -> tuple[str, str | None, dict[str, float]]:
    """Thresholds as plain data, ``{"rule": str, "split": str | null, "values": {tag: float in
    [0, 1]}}`` with one value per tag of ``tags`` (also the form a checkpoint stores them
    in, ``checkpoint["thresholds"]``): (rule, split, values); ``ConfigError`` naming
    ``source`` and the field otherwise."""
    schema = _Schema(source)
    doc = schema.mapping(key, value, ("rule", "split", "values"))
    rule = schema.name(f"{key}.rule", doc["rule"])
    split = None if doc["split"] is None else schema.name(f"{key}.split", doc["split"])
    values = schema.per_tag(f"{key}.values", doc["values"], tags, PROBABILITY)
    return rule, split, values


def check_info(document: Any, source: str) -> Info:
    """``tagger.json``'s data, checked field by field (see the module's docstring); raises
    ``ConfigError`` naming ``source`` and the first bad field."""
    schema = _Schema(source)
    target = _target_key(document)
    if target is not None:
        raise ConfigError(f"{source}: holds a _target_ key ({target}); a bundle names no code "
                          "and tagger builds nothing from it: use a tagger.json written by "
                          "tagger export")  # fmt: skip
    doc = schema.mapping("tagger.json", document, FIELDS)
    if doc["format"] != FORMAT:
        raise schema.fail("format", f"must be {FORMAT!r}, not {_shown(doc['format'])}")
    if doc["format_version"] != FORMAT_VERSION or isinstance(doc["format_version"], bool):
        raise schema.fail("format_version", f"must be {FORMAT_VERSION} (the version this tagger "
                          f"reads), not {_shown(doc['format_version'])}")  # fmt: skip
    schema.name("tagger_version", doc["tagger_version"])
    schema.text("input", doc["input"], empty=True)
    schema.text("output", doc["output"], empty=True)
    tags = doc["tag_names"]
    if not isinstance(tags, list) or not 1 <= len(tags) <= MAX_TAGS:
        raise schema.fail("tag_names", f"must be a list of 1 to {MAX_TAGS} tag names, not "
                          f"{_shown(tags)}")  # fmt: skip
    for index, tag in enumerate(tags):
        schema.name(f"tag_names.{index}", tag)
    if len(set(tags)) < len(tags):
        twice = next(tag for tag in tags if tags.count(tag) > 1)
        raise schema.fail("tag_names", f"names {twice!r} twice")
    rule, _, thresholds = check_thresholds(doc["thresholds"], tags, source)
    sample_rate = schema.number("sample_rate", doc["sample_rate"], SAMPLE_RATE)
    window = schema.number("window_length", doc["window_length"], WINDOW)
    hop = schema.number("hop_length", doc["hop_length"],
                        Spec("int", 1, window, unit=" (samples, at most window_length)"))
    if doc["aggregation"] not in AGGREGATIONS:
        raise schema.fail("aggregation", f"must be one of {', '.join(AGGREGATIONS)}, not "
                          f"{_shown(doc['aggregation'])}")  # fmt: skip
    input_scale = schema.number("input_scale", doc["input_scale"], INPUT_SCALE)
    _check_provenance(schema, doc, tags)
    return Info(list(tags), thresholds, rule, sample_rate, window, hop, doc["aggregation"],
                input_scale, doc)  # fmt: skip


def _check_provenance(schema: _Schema, doc: dict[str, Any], tags: list[str]) -> None:
    """The fields that say where the model comes from (read by people, not by tagger)."""
    model = schema.mapping("model", doc["model"], ("network", "parameters"))
    schema.name("model.network", model["network"])
    schema.number("model.parameters", model["parameters"], PARAMETERS)
    data = schema.mapping("data", doc["data"],
                          ("name", "description", "real_music", "split", "clips"))
    schema.name("data.name", data["name"])
    schema.text("data.description", data["description"], empty=True, null=True)
    schema.boolean("data.real_music", data["real_music"], null=True)
    if data["split"] is not None:
        schema.name("data.split", data["split"])
    if data["clips"] is not None:
        clips = schema.mapping("data.clips", data["clips"], ("train", "val", "test"), ())
        for split, count in clips.items():
            schema.number(f"data.clips.{split}", count, CLIPS)
    metrics = doc["test_metrics"]
    if metrics is not None:
        metrics = schema.mapping("test_metrics", metrics, ("split", "checkpoint", "auc",
                                 "pr_auc", "per_tag_auc", "per_tag_pr_auc"))  # fmt: skip
        schema.name("test_metrics.split", metrics["split"])
        schema.name("test_metrics.checkpoint", metrics["checkpoint"])
        for key in ("auc", "pr_auc"):
            schema.number(f"test_metrics.{key}", metrics[key], PROBABILITY, null=True)
        for key in ("per_tag_auc", "per_tag_pr_auc"):
            schema.per_tag(f"test_metrics.{key}", metrics[key], tags, PROBABILITY, null=True)
    checkpoint = schema.mapping("checkpoint", doc["checkpoint"], ("file", "sha256"))
    schema.name("checkpoint.file", checkpoint["file"])
    if not isinstance(checkpoint["sha256"], str) or not _SHA256.match(checkpoint["sha256"]):
        raise schema.fail("checkpoint.sha256", "must be 64 lowercase hexadecimal digits, not "
                          f"{_shown(checkpoint['sha256'])}")  # fmt: skip


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number JSON allows")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(set(keys)) < len(keys):
        twice = next(key for key in keys if keys.count(key) > 1)
        raise ValueError(f"the key {twice!r} is given twice in one object")
    return dict(pairs)


def read_info(directory: Path) -> Info:
    """A bundle's checked ``tagger.json``; ``ConfigError`` naming it when it is missing,
    not JSON, too large, or fails ``check_info``."""
    path = directory / INFO_FILE
    if not path.is_file():
        raise ConfigError(f"{directory} is a folder but not a tagger bundle: it has no "
                          f"{INFO_FILE} (write one with tagger export CKPT --format bundle "
                          "--out DIR)")  # fmt: skip
    try:
        with path.open("rb") as file:
            raw = file.read(MAX_INFO_BYTES + 1)
    except OSError as error:
        raise ConfigError(f"{path} cannot be read: {error.strerror or error}") from None
    if len(raw) > MAX_INFO_BYTES:
        raise ConfigError(f"{path} is larger than {MAX_INFO_BYTES // 2**20} MiB; a bundle's "
                          "tagger.json is a few kilobytes")  # fmt: skip
    try:
        document = json.loads(raw.decode("utf-8"), parse_constant=_refuse_constant,
                              object_pairs_hook=_no_duplicates)  # fmt: skip
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ConfigError(f"{path} is not a bundle's JSON: {reason}") from None
    return check_info(document, str(path))


def is_bundle(path: Path) -> bool:
    """Whether ``path`` is given as a bundle: a folder (a checkpoint is a file)."""
    return path.is_dir()


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)), with no overflow for large ``|x|``."""
    return np.exp(-np.logaddexp(0.0, -x))


def clip_probabilities(logits: np.ndarray, aggregation: str) -> np.ndarray:
    """One file's windows' logits [n, K] -> its tag probabilities [K], as
    ``tagger.aggregation.clip_probabilities`` gives them."""
    if aggregation == "mean_logits":
        return sigmoid(logits.mean(axis=0))
    return sigmoid(logits).mean(axis=0)


class BundleTagger:
    """A bundle ready to tag files: ``tagger.predict.Tagger``'s interface (``tag_names``,
    ``sample_rate``, ``window``, ``thresholds``, ``tag``), run by onnxruntime.

    Args:
        directory: the bundle.
        info: its checked ``tagger.json``.
        session: an ``onnxruntime.InferenceSession`` of its ``model.onnx``.
    """

    def __init__(self, directory: Path, info: Info, session: Any) -> None:
        self.directory = directory
        self.info = info
        self.session = session
        self.sample_rate = info.sample_rate
        self.window = info.window_length
        self.hop = info.hop_length

    @classmethod
    def from_bundle(cls, directory: Path, device: str = "cpu") -> BundleTagger:
        """Load a bundle written by ``tagger export --format bundle``; ``device`` is ``cpu``
        or ``cuda`` (onnxruntime's CUDA provider). Raises ``ConfigError`` naming the file."""
        info = read_info(directory)
        model = directory / MODEL_FILE
        if not model.is_file():
            raise ConfigError(f"bundle {directory} has no {MODEL_FILE}")
        try:
            import onnxruntime
        except ImportError:
            raise ConfigError("a bundle is run by onnxruntime, which is not installed: "
                              "pip install onnxruntime") from None  # fmt: skip
        provider = "CUDAExecutionProvider" if device == "cuda" else "CPUExecutionProvider"
        if provider not in onnxruntime.get_available_providers():
            raise ConfigError(f"--device {device}: this onnxruntime has no {provider} (pip "
                              "install onnxruntime-gpu, or leave --device at cpu)")  # fmt: skip
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: its warnings are not the user's
        try:
            session = onnxruntime.InferenceSession(str(model), options, providers=[provider])
        except Exception as error:  # onnxruntime's own Fail, InvalidGraph, InvalidProtobuf
            reason = (str(error).splitlines() or [type(error).__name__])[0]
            raise ConfigError(f"{model} cannot be loaded by onnxruntime: {reason}") from None
        tagger = cls(directory, info, session)
        tagger._check_model(model)
        return tagger

    def _check_model(self, model: Path) -> None:
        """The model takes ``audio`` and gives ``logits`` [1, 1, K], K the tags of tagger.json,
        for one window of silence; else ``ConfigError``."""
        inputs = [i.name for i in self.session.get_inputs()]
        outputs = [o.name for o in self.session.get_outputs()]
        if inputs != [INPUT_NAME] or OUTPUT_NAME not in outputs:
            raise ConfigError(f"{model} takes {inputs} and gives {outputs}; a bundle's model "
                              f"takes [{INPUT_NAME!r}] and gives {OUTPUT_NAME!r}")  # fmt: skip
        try:
            logits = self._run(np.zeros((1, 1, self.window), np.float32))
        except Exception as error:
            reason = (str(error).splitlines() or [type(error).__name__])[0]
            raise ConfigError(f"{model} cannot tag one window of {self.window} samples "
                              f"(tagger.json's window_length): {reason}") from None  # fmt: skip
        if logits.shape != (1, len(self.tag_names)):
            raise ConfigError(f"{model} gives logits of shape {list(logits.shape)} for one "
                              f"window; tagger.json names {len(self.tag_names)} tags")  # fmt: skip

    @property
    def tag_names(self) -> list[str]:
        return self.info.tag_names

    @property
    def thresholds(self) -> dict[str, float] | None:
        """Each tag's decision threshold (tagger.json's ``thresholds.values``), as a
        checkpoint's tagger gives them; None when their rule is ``default`` (the checkpoint
        stored none: every tag at ``DEFAULT_THRESHOLD``)."""
        return None if self.info.threshold_rule == "default" else self.info.thresholds

    def _run(self, windows: np.ndarray) -> np.ndarray:
        """Windows [n, 1, T] on the [-1, 1] scale -> their logits [n, K]."""
        audio = (windows * np.float32(self.info.input_scale)).astype(np.float32)[None]
        (logits,) = self.session.run([OUTPUT_NAME], {INPUT_NAME: audio})
        return np.asarray(logits)[0]

    def _window_logits(self, windows: np.ndarray) -> np.ndarray:
        """Windows [n, 1, T] -> logits [n, K] (float64), ``WINDOWS_PER_BATCH`` at a time, so
        overlapping windows (a view) are never all copied."""
        batches = [self._run(windows[i : i + WINDOWS_PER_BATCH])
                   for i in range(0, len(windows), WINDOWS_PER_BATCH)]  # fmt: skip
        return np.concatenate(batches).astype(np.float64)

    def tag(self, path: Path, hop: int | None = None) -> Prediction:
        """Tag one file, as ``tagger.predict.Tagger.tag`` does; with ``hop`` (samples) also its
        taggram. Raises ``tagger.prepare.audio.AudioError`` if the file cannot be decoded."""
        samples, truncated = read_audio(path, self.sample_rate)
        logits = self._window_logits(window_view(samples, self.window, self.hop))
        probabilities = clip_probabilities(logits, self.info.aggregation)
        prediction = Prediction(path, len(logits), probabilities.astype(np.float32), truncated)
        if hop is not None:
            if hop != self.hop:
                logits = self._window_logits(window_view(samples, self.window, hop))
            hop_s = hop / self.sample_rate
            prediction.taggram = Taggram(np.arange(len(logits)) * hop_s, hop_s,
                                         sigmoid(logits).astype(np.float32))  # fmt: skip
        return prediction


def model_card(document: Mapping[str, Any]) -> str:
    """``MODEL_CARD.md`` for a bundle's ``tagger.json`` (checked data): the data, the test
    metrics per tag, the intended use and the limits."""
    data, metrics, tags = document["data"], document["test_metrics"], document["tag_names"]
    synthetic = data["real_music"] is False
    seconds = document["window_length"] / document["sample_rate"]
    lines = [
        f"# Model card: {document['model']['network']} music tagger ({len(tags)} tags)",
        "",
        f"Exported by tagger {document['tagger_version']} from the checkpoint "
        f"`{document['checkpoint']['file']}` (sha256 `{document['checkpoint']['sha256']}`).",
        "",
        "## Data",
        "",
        f"- Data set: **{data['name']}**"
        + (f": {data['description']}" if data["description"] else ""),
    ]
    if synthetic:
        lines.append("- **Trained on synthetic audio** (generated tones, noise and drum pulses), "
                     "not music: this model shows that the pipeline runs end to end; its tags "
                     "say nothing about real recordings.")  # fmt: skip
    elif data["real_music"] is None:
        lines.append("- Whether the audio is real music is not recorded.")
    if data["split"]:
        lines.append(f"- Split: {data['split']}")
    if data["clips"]:
        lines.append("- Clips: " + ", ".join(f"{n} {split}" for split, n in data["clips"].items()))
    lines += [
        f"- Input: mono audio at {document['sample_rate']} Hz, in windows of "
        f"{document['window_length']} samples ({seconds:.2f} s), {document['hop_length']} "
        f"samples apart; the windows' scores are combined by {document['aggregation']}.",
        "",
        "## Metrics",
        "",
    ]
    if metrics is None:
        lines.append("No test metrics are known for this checkpoint (the run was not tested, "
                     "or its metrics.json was not beside the checkpoint when it was exported).")
    else:
        lines += [
            f"On the {metrics['split']} split (checkpoint `{metrics['checkpoint']}`): ROC-AUC "
            f"{_figure(metrics['auc'])}, PR-AUC {_figure(metrics['pr_auc'])} (macro averages).",
            "",
            "| tag | ROC-AUC | PR-AUC | threshold |",
            "| --- | --- | --- | --- |",
        ]
        values = document["thresholds"]["values"]
        lines += [f"| {_cell(tag)} | {_figure(metrics['per_tag_auc'][tag])} | "
                  f"{_figure(metrics['per_tag_pr_auc'][tag])} | {values[tag]:.3f} |"
                  for tag in tags]  # fmt: skip
    thresholds = document["thresholds"]
    chosen = f", chosen on the {thresholds['split']} split" if thresholds["split"] else ""
    lines += [
        "",
        f"Tags are decided at the thresholds of `tagger.json` (rule `{thresholds['rule']}`"
        f"{chosen}).",
        "",
        "## Intended use",
        "",
        "Tagging audio files with these tags, and research on music tagging: "
        "`tagger predict BUNDLE FILES` (numpy, soundfile, soxr and onnxruntime suffice).",
        "",
        "## Limits",
        "",
        "- The model knows only the tags above, and only audio like its training data; "
        "scores on other music (other genres, recording conditions, lengths) are not measured.",
        "- Its probabilities are not calibrated across data sets; the thresholds were chosen "
        "on the data above.",
        "- Tags of data sets such as MagnaTagATune are noisy and incomplete: a missing tag "
        "does not mean the property is absent.",
        "- Not meant for decisions about people, nor for judging music's worth.",
    ]
    if synthetic:
        lines.append("- Trained on synthetic audio: not for any use on real music.")
    return "\n".join(lines) + "\n"


def _figure(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"


def _cell(text: str) -> str:
    """A tag name in a Markdown table cell."""
    return text.replace("|", "\\|")
