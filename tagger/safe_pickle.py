"""Pandas DataFrame pickles read through an allowlist: data, never code.

Unpickling calls whatever a pickle names. The coursework's label files are DataFrame
pickles, so ``read_dataframe_pickle`` lets a pickle name only the exact classes and
rebuild functions that pandas and numpy use for a DataFrame of strings, numbers and arrays
(``ALLOWED``; pandas' own map of renamed modules applies first, so pickles of older pandas
versions load). Anything else (``os.system``, ``pandas.read_pickle``, ``numpy.load`` ...)
is refused before it is imported.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import pandas as pd
from pandas.compat import pickle_compat

#: (module, name) a DataFrame pickle may name, after pandas' map of old locations.
ALLOWED: frozenset[tuple[str, str]] = frozenset({
    # the Python built-ins and reconstructors pickle itself uses
    ("builtins", "slice"), ("__builtin__", "slice"),
    ("builtins", "object"), ("__builtin__", "object"),
    ("builtins", "complex"), ("builtins", "frozenset"), ("builtins", "set"),
    ("copyreg", "_reconstructor"), ("copy_reg", "_reconstructor"),
    ("_codecs", "encode"),
    # numpy arrays and dtypes (numpy 1 and 2 locations)
    ("numpy", "dtype"), ("numpy", "ndarray"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    # pandas frames, indexes and their blocks (pandas 0.2x to 3)
    ("pandas", "DataFrame"), ("pandas.core.frame", "DataFrame"),
    ("pandas", "Index"), ("pandas.core.indexes.base", "Index"),
    ("pandas", "RangeIndex"), ("pandas.core.indexes.range", "RangeIndex"),
    ("pandas.core.indexes.numeric", "Int64Index"),
    ("pandas.core.indexes.base", "_new_Index"), ("pandas.core.index", "_new_Index"),
    ("pandas.core.internals.managers", "BlockManager"),
    ("pandas.core.internals", "BlockManager"),
    ("pandas.core.internals.blocks", "ObjectBlock"),
    ("pandas.core.internals.blocks", "FloatBlock"),
    ("pandas.core.internals.blocks", "IntBlock"),
    ("pandas.core.internals.blocks", "NumericBlock"),
    ("pandas.core.internals.blocks", "Block"),
    ("pandas.core.internals.blocks", "new_block"),
    ("pandas._libs.internals", "_unpickle_block"),
    ("pandas._libs.internals", "BlockPlacement"),
    ("pandas._libs.arrays", "__pyx_unpickle_NDArrayBacked"),
    ("pandas", "StringDtype"), ("pandas.core.arrays.string_", "StringDtype"),
    ("pandas.arrays", "StringArray"), ("pandas.core.arrays.string_", "StringArray"),
})  # fmt: skip


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle names something outside ``ALLOWED``."""


class _AllowlistUnpickler(pickle_compat.Unpickler):
    """pandas' compatible unpickler, restricted to ``ALLOWED``."""

    def find_class(self, module: str, name: str) -> Any:
        mapped = pickle_compat._class_locations_map.get((module, name), (module, name))
        if (module, name) not in ALLOWED and mapped not in ALLOWED:
            raise RefusedGlobal(f"{module}.{name}")
        return super().find_class(module, name)


def read_dataframe_pickle(path: Path) -> pd.DataFrame:
    """The DataFrame pickled in ``path``, unpickled through the allowlist.

    Raises ``RefusedGlobal`` (naming what the pickle asked for) when it names anything a
    DataFrame of strings, numbers and arrays does not need, ``pickle.UnpicklingError`` or
    another exception when it is damaged, and ``TypeError`` when it holds no DataFrame.
    """
    with Path(path).open("rb") as f:
        data = f.read()
    frame = _AllowlistUnpickler(io.BytesIO(data)).load()
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"it holds a {type(frame).__name__}, not a DataFrame")
    return frame
