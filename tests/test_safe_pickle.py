"""Label pickles are data, never code (``tagger.safe_pickle``): every DataFrame of the
coursework's shape loads as pandas loads it, and a pickle that names anything else is
refused before it is imported, wherever in the file it stands."""

from __future__ import annotations

import importlib
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tagger.data.coursework import read_labels_pickle
from tagger.errors import ConfigError
from tagger.safe_pickle import RefusedGlobal, read_dataframe_pickle

#: Callables an attacker would name: they run commands, write or read files, or unpickle.
ATTACKS = [
    ("os", "system"), ("posix", "system"), ("subprocess", "Popen"), ("builtins", "eval"),
    ("builtins", "exec"), ("builtins", "open"), ("builtins", "getattr"),
    ("pandas", "read_pickle"), ("pandas.io.pickle", "read_pickle"), ("numpy", "load"),
    ("pathlib", "Path"), ("tagger.run_files", "write_text"), ("shutil", "rmtree"),
    ("importlib", "import_module"), ("pickle", "loads"), ("numpy", "fromfile"),
]  # fmt: skip


class Call:
    """Pickles as a call of ``module.name(*args)``: what a crafted pickle does."""

    def __init__(self, module: str, name: str, args: tuple) -> None:
        self.function = getattr(importlib.import_module(module), name)
        self.args = args

    def __reduce__(self) -> tuple:
        return self.function, self.args


def crafted(frame: pd.DataFrame, call: Call, protocol: int) -> bytes:
    """A pickle of ``frame`` whose first label is replaced by ``call``."""
    frame = frame.copy()
    frame["label"] = frame["label"].astype(object)
    frame.at[0, "label"] = call
    return pickle.dumps(frame, protocol=protocol)


def labels_frame() -> pd.DataFrame:
    return pd.DataFrame({"file_path": ["0/a.npy"], "label": [np.zeros(50)], "part": ["0"]})


frames = st.builds(
    lambda n, labels_as, index, parts: pd.DataFrame(
        {
            "file_path": [f"{i % 16:x}/clip-{i}.npy" for i in range(n)],
            "label": [
                (np.arange(50) % 2 == i % 2).astype(labels_as) if labels_as is not list
                else [float(j % 2) for j in range(50)]
                for i in range(n)
            ],
            "part": [f"{i % 16:x}" for i in range(n)],
        },
        index=range(index, index + n) if parts else None,
    ),
    st.integers(1, 6),
    st.sampled_from([np.float32, np.float64, np.int64, list]),
    st.integers(0, 100),
    st.booleans(),
)


@settings(max_examples=40, deadline=None)
@given(frame=frames, protocol=st.integers(2, pickle.HIGHEST_PROTOCOL))
def test_every_labels_frame_loads_as_pandas_loads_it(
    tmp_path_factory: pytest.TempPathFactory, frame: pd.DataFrame, protocol: int
) -> None:
    path = tmp_path_factory.mktemp("pkl") / "train_labels.pkl"
    path.write_bytes(pickle.dumps(frame, protocol=protocol))
    loaded = read_dataframe_pickle(path)
    pd.testing.assert_frame_equal(loaded, pd.read_pickle(path))


@settings(max_examples=60, deadline=None)
@given(
    attack=st.sampled_from(ATTACKS),
    protocol=st.integers(2, pickle.HIGHEST_PROTOCOL),
)
def test_a_pickle_naming_anything_else_is_refused_before_it_runs(
    tmp_path_factory: pytest.TempPathFactory, attack: tuple[str, str], protocol: int
) -> None:
    folder = tmp_path_factory.mktemp("attack")
    marker = folder / "marker"
    path = folder / "train_labels.pkl"
    path.write_bytes(crafted(labels_frame(), Call(*attack, (str(marker),)), protocol))
    with pytest.raises(RefusedGlobal, match=attack[1]):
        read_dataframe_pickle(path)
    with pytest.raises(ConfigError, match=f"names .*{attack[1]}.* never holds") as refused:
        read_labels_pickle(path)
    assert "\n" not in str(refused.value)
    assert not marker.exists()


def test_the_crafted_pickles_really_run_code_without_the_gate(tmp_path: Path) -> None:
    """The attack is real: plain pandas runs the planted call; the gate does not."""
    marker = tmp_path / "marker"
    path = tmp_path / "train_labels.pkl"
    path.write_bytes(crafted(labels_frame(), Call("builtins", "open", (str(marker), "w")), 2))
    with pytest.raises(RefusedGlobal, match="open"):
        read_dataframe_pickle(path)
    assert not marker.exists()
    pd.read_pickle(path)
    assert marker.exists()
