"""Published MTAT figures (macro ROC-AUC over 50 tags) that runs are compared against.

Sources, tables and settings: docs/results.md. ``published_auc`` finds the figure for a run
from its resolved config and its dataset description; runs that are not on MTAT, or on a
setting no paper reports, get none. No MTG-Jamendo figure is held (docs/results.md says
why), so runs on it get none either.
"""

from __future__ import annotations

from typing import Any

#: Dieleman & Schrauwen (2014), Table 1: (length, stride) -> (spectrogram, raw audio).
#: 16 kHz, `dieleman` split, `top50`.
DIELEMAN_TABLE1: dict[tuple[int, int], tuple[float, float]] = {
    (1024, 1024): (0.8690, 0.8366),
    (1024, 512): (0.8726, 0.8365),
    (512, 512): (0.8793, 0.8386),
    (512, 256): (0.8793, 0.8408),
    (256, 256): (0.8815, 0.8487),
}
#: Dieleman Table 2 (raw audio 1024/1024): first-layer nonlinearity -> AUC.
DIELEMAN_NONLINEARITY: dict[str, float] = {"relu": 0.8366, "log1p_sq": 0.7508, "log1p_abs": 0.7487}
#: Dieleman Table 3 (raw audio 1024/1024): (pooling, group size) -> AUC.
DIELEMAN_POOLING: dict[tuple[str, int], float] = {
    ("none", 1): 0.8366,
    ("l2", 2): 0.8387,
    ("l2", 4): 0.8387,
    ("max", 2): 0.8183,
    ("max", 4): 0.8280,
}
#: The replication paper's Table I, 5 epochs of SGD (lr 0.1135), 12 kHz, `coursework`
#: split, `merged50`: (length, stride) -> (train AUC, test AUC).
REPLICATION_TABLE1: dict[tuple[int, int], tuple[float, float]] = {
    (1024, 1024): (0.7810, 0.7665),
    (1024, 512): (0.7703, 0.7591),
    (512, 512): (0.7852, 0.7748),
    (512, 256): (0.7769, 0.7705),
    (256, 256): (0.7859, 0.7873),
}
#: Sample-level models on the `clean` split, `top50`, 16 kHz (Kim, Lee & Nam 2018).
SAMPLE_LEVEL: dict[str, float] = {"samplecnn": 0.9055, "rese2": 0.9113}
#: The networks the papers report, by their class (``model.net._target_``): Dieleman's
#: raw-audio CNN (``baseline`` and ``wide``), his spectrogram model, the sample-level pair.
NETWORKS: dict[str, str] = {
    "tagger.models.dieleman.DielemanCNN": "raw",
    "tagger.models.spectrogram.SpectrogramCNN": "spectrogram",
    "tagger.models.samplecnn.SampleCNN": "samplecnn",
    "tagger.models.rese.ReSE2": "rese2",
}


def published_auc(config: dict[str, Any], dataset: dict[str, Any]) -> tuple[float, str] | None:
    """The published test ROC-AUC for a run's setting and where it comes from, if any.

    Args:
        config: the run's resolved config (``metrics.json["config"]``).
        dataset: the run's dataset description (``metrics.json["dataset"]``); its
            ``tag_set`` and ``split`` say which paper's protocol the run follows.
    """
    if not dataset.get("real_music"):
        return None
    model = NETWORKS.get(config.get("model", {}).get("net", {}).get("_target_", ""))
    geometry = (config.get("conv", {}).get("length"), config.get("conv", {}).get("stride"))
    optimizer = config.get("optimizer", {}).get("_target_", "")
    protocol = (dataset.get("tag_set"), dataset.get("split"))

    coursework_sgd = model == "raw" and optimizer.endswith("SGD")
    if protocol == ("merged50", "coursework") and coursework_sgd and geometry in REPLICATION_TABLE1:
        return REPLICATION_TABLE1[geometry][1], "replication paper, Table I"
    if protocol == ("top50", "dieleman") and geometry in DIELEMAN_TABLE1:
        spectrogram, raw = DIELEMAN_TABLE1[geometry]
        net = config.get("model", {}).get("net", {})
        nonlinearity = net.get("nonlinearity", "relu")
        pooling = (net.get("feature_pool", "none"), net.get("feature_pool_size", 1))
        if model == "raw" and (nonlinearity != "relu" or pooling[0] != "none"):
            if geometry != (1024, 1024) or (nonlinearity != "relu" and pooling[0] != "none"):
                return None  # the ablations were run one at a time, at 1024/1024 only
            if nonlinearity != "relu":
                return DIELEMAN_NONLINEARITY[nonlinearity], "Dieleman & Schrauwen 2014, Table 2"
            if pooling in DIELEMAN_POOLING:
                return DIELEMAN_POOLING[pooling], "Dieleman & Schrauwen 2014, Table 3"
            return None
        if model == "raw":
            return raw, "Dieleman & Schrauwen 2014, Table 1 (raw audio)"
        if model == "spectrogram":
            return spectrogram, "Dieleman & Schrauwen 2014, Table 1 (spectrogram)"
    if protocol == ("top50", "clean") and model in SAMPLE_LEVEL:
        return SAMPLE_LEVEL[model], "Kim, Lee & Nam 2018"
    return None
