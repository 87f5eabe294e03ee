"""Train/val/test splits: MTAT's published split rules and seeded splits for other data.

MTAT's clips sit in 16 folders ("parts") ``0``-``f``; the split rules in use
(docs/mtat.md, "Splits") are:

    dieleman     train 0-b, val c, test d-f; every clip kept
    coursework   train 0-c, test d-f, no val; clips with no tag in the tag set dropped
                 (the coursework's pickles hold only tagged clips: 16,963 + 4,392)
    clean:DIR    the split files in DIR (``train``/``valid``/``test`` as ``.npy`` arrays of
                 ``"<index>\\t<part>/<file>.mp3"`` or ``.txt`` lists of mp3 paths); clips in
                 no file, or with no tag in the tag set, are dropped. The listed paths pass
                 ``tagger.confine`` (``SplitRule.confined_to``): each must lie under the
                 MTAT root and be listed once, judged on its resolved path
    pons:DIR     Pons et al.'s files in DIR (``{train,val,test}_gt_mtt.tsv``, one clip a line:
                 ``<clip_id>\\t[<50 floats>]``), by clip id; clips in no file are dropped
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from tagger.confine import confine_all
from tagger.errors import ConfigError

PARTS = "0123456789abcdef"
SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class SplitRule:
    """Which split each MTAT clip belongs to, by its part, its path or its id.

    Attributes:
        name: ``dieleman``, ``coursework``, ``clean:DIR`` or ``pons:DIR``.
        drop_untagged: drop clips with no tag of the tag set (counted in the store's meta).
        by_part: part (``0``-``f``) -> split, for rules defined by part.
        by_path: mp3 path (``<part>/<file>.mp3``, resolved and relative to the MTAT root)
            -> split, for rules given as path lists; filled by ``confined_to``.
        by_id: clip id (``annotations_final.csv``'s ``clip_id``) -> split, for rules given
            as id lists.
        listed_paths: for rules given as path lists, every entry of the split files as
            ``(mp3 path as written, split, file and line)``.
    """

    name: str
    drop_untagged: bool
    by_part: dict[str, str] = field(default_factory=dict)
    by_path: dict[str, str] = field(default_factory=dict)
    by_id: dict[str, str] = field(default_factory=dict)
    listed_paths: tuple[tuple[str, str, str], ...] = ()

    def split_of(self, clip_id: str, mp3_path: str) -> str | None:
        """The split of clip ``clip_id`` at ``mp3_path`` (resolved, relative to the MTAT
        root: the part is the folder the file really lies in), None if in none."""
        if self.by_id:
            return self.by_id.get(clip_id)
        if self.listed_paths:
            return self.by_path.get(mp3_path)
        return self.by_part.get(mp3_path.split("/", 1)[0])

    def listed(self) -> tuple[str, dict[str, str]]:
        """For rules given as lists: what they list (``clip id`` or ``mp3 path``) and the
        list; ``("", {})`` for rules by part."""
        if self.by_id:
            return "clip id", self.by_id
        return ("mp3 path", self.by_path) if self.listed_paths else ("", {})

    def confined_to(self, root: Path) -> SplitRule:
        """This rule with ``by_path`` keyed by each listed path resolved under the MTAT
        ``root`` (``tagger.confine.confine_all``): a listed path that leads outside the
        root, or two entries naming one file (in one split or two), raise ``ConfigError``
        naming the split file and line. Rules not given as paths are returned as they are."""
        if not self.listed_paths:
            return self
        targets = confine_all(
            root,
            [(path, where) for path, _, where in self.listed_paths],
            field="mp3 path",
            root_name="--root",
        )
        inside = root.resolve()
        by_path = {
            target.relative_to(inside).as_posix(): split
            for target, (_, split, _) in zip(targets, self.listed_paths, strict=True)
        }
        return replace(self, by_path=by_path)


def _parts(first: str, last: str, split: str) -> dict[str, str]:
    return {part: split for part in PARTS[PARTS.index(first) : PARTS.index(last) + 1]}


def _read_split_file(path: Path) -> list[tuple[str, str]]:
    """The mp3 paths listed in a ``clean`` split file (``.npy`` of ``index\\tpath`` or
    ``.txt``), each with where it is (``FILE entry N`` or ``FILE line N``, from 1)."""
    if path.suffix == ".npy":
        try:
            entries = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as error:
            raise ConfigError(
                f"{path}: cannot be read as a numpy array of strings ({error})"
            ) from None
        if entries.ndim != 1:
            raise ConfigError(f"{path}: holds an array of shape {entries.shape}; expected a list")
        return [
            (str(entry).split("\t")[-1].strip(), f"{path} entry {number}")
            for number, entry in enumerate(entries.tolist(), start=1)
        ]
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not a UTF-8 text file ({error})") from None
    return [
        (text.split("\t")[-1].strip(), f"{path} line {number}")
        for number, text in enumerate(lines, start=1)
        if text.strip()
    ]


def _clean_rule(directory: Path) -> SplitRule:
    if not directory.is_dir():
        raise ConfigError(f"--split clean:{directory}: no such directory of split files")
    listed: list[tuple[str, str, str]] = []
    for split, stem in (("train", "train"), ("val", "valid"), ("test", "test")):
        candidates = [directory / f"{stem}.npy", directory / f"{stem}.txt"]
        found = [path for path in candidates if path.is_file()]
        if not found:
            raise ConfigError(
                f"--split clean:{directory}: expected {stem}.npy or {stem}.txt in that directory"
            )
        listed += [(path, split, where) for path, where in _read_split_file(found[0])]
    return SplitRule(f"clean:{directory}", drop_untagged=True, listed_paths=tuple(listed))


#: The split files of Pons et al.'s MTAT split, by split.
PONS_FILES = {"train": "train_gt_mtt.tsv", "val": "val_gt_mtt.tsv", "test": "test_gt_mtt.tsv"}


def _read_gt_file(path: Path) -> list[str]:
    """The clip ids of a Pons ``*_gt_mtt.tsv`` file (``<clip_id>\\t[<floats>]`` lines)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not a UTF-8 text file ({error})") from None
    ids = []
    for line, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        clip_id, tab, vector = text.partition("\t")
        if not tab or not clip_id.strip().isdigit() or not vector.strip().startswith("["):
            raise ConfigError(
                f"{path} line {line}: expected `<clip_id>\\t[<50 numbers>]` (a clip id of "
                f"annotations_final.csv, a TAB, the clip's tag vector); found {text[:60]!r}"
            )
        ids.append(clip_id.strip())
    return ids


def _pons_rule(directory: Path) -> SplitRule:
    if not directory.is_dir():
        raise ConfigError(f"--split pons:{directory}: no such directory of split files")
    by_id: dict[str, str] = {}
    for split, name in PONS_FILES.items():
        path = directory / name
        if not path.is_file():
            raise ConfigError(
                f"--split pons:{directory}: expected {', '.join(PONS_FILES.values())} in that "
                f"directory; {name} is not there"
            )
        for clip_id in _read_gt_file(path):
            if by_id.setdefault(clip_id, split) != split:
                raise ConfigError(
                    f"{path}: clip {clip_id} is already in {PONS_FILES[by_id[clip_id]]}; a "
                    "clip can be in one split only"
                )
    return SplitRule(f"pons:{directory}", drop_untagged=False, by_id=by_id)


def split_rule(spec: str) -> SplitRule:
    """``dieleman``, ``coursework``, ``clean:DIR`` or ``pons:DIR`` -> the ``SplitRule``."""
    if spec == "dieleman":
        return SplitRule(
            "dieleman",
            drop_untagged=False,
            by_part={**_parts("0", "b", "train"), "c": "val", **_parts("d", "f", "test")},
        )
    if spec == "coursework":
        return SplitRule(
            "coursework",
            drop_untagged=True,
            by_part={**_parts("0", "c", "train"), **_parts("d", "f", "test")},
        )
    if spec.startswith("clean:"):
        return _clean_rule(Path(spec.removeprefix("clean:")))
    if spec.startswith("pons:"):
        return _pons_rule(Path(spec.removeprefix("pons:")))
    raise ConfigError(f"--split {spec!r}: expected dieleman, coursework, clean:DIR or pons:DIR")


def seeded_split(n_items: int, val_fraction: float, test_fraction: float, seed: int) -> list[str]:
    """A random train/val/test assignment of ``n_items`` that depends only on the seed.

    The val and test sizes are ``round(fraction * n_items)``; the rest is train.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(
            f"split fractions val={val_fraction}, test={test_fraction} must be >= 0 and sum "
            "to less than 1"
        )
    order = np.random.default_rng(seed).permutation(n_items)
    n_val, n_test = round(val_fraction * n_items), round(test_fraction * n_items)
    splits = ["train"] * n_items
    for position, item in enumerate(order.tolist()):
        if position < n_val:
            splits[item] = "val"
        elif position < n_val + n_test:
            splits[item] = "test"
    return splits


def carve_validation(
    groups: list[str], val_parts: list[str] | None, val_fraction: float | None, seed: int
) -> np.ndarray:
    """Which training clips become validation clips: bool [clips].

    Args:
        groups: each clip's part (MTAT) or top folder, matched against ``val_parts``.
        val_parts: these parts become validation (``data.val_parts``), or None.
        val_fraction: this seeded fraction becomes validation (``data.val_fraction``), or None.
        seed: seed of the fraction (``data.split_seed``).
    """
    if val_parts and val_fraction:
        raise ConfigError("set data.val_parts or data.val_fraction, not both")
    if val_parts:
        wanted = {str(part) for part in val_parts}
        mask = np.array([group in wanted for group in groups], dtype=bool)
        if not mask.any():
            raise ConfigError(
                f"data.val_parts={sorted(wanted)}: no training clip is in these parts "
                f"(the parts are {sorted(set(groups))})"
            )
        if mask.all():
            raise ConfigError(f"data.val_parts={sorted(wanted)} would leave no training clip")
        return mask
    if val_fraction:
        return np.array(seeded_split(len(groups), val_fraction, 0.0, seed)) == "val"
    return np.zeros(len(groups), dtype=bool)
