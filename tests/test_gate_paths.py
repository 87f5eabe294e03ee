"""Gate 2: one confinement for every path read from a data file (``tagger.confine``).

Paths are generated over shapes (``..`` at each depth, absolute paths, file and folder
symlinks out, symlinks in, other spellings of one file) and written into the data file of
every source that reads paths: the folder source's labels CSV, MTAT's
``annotations_final.csv`` under each split rule and its ``clean:`` split files (text and
numpy), MTG-Jamendo's split files and the coursework's labels pickles (Pons files list
clip ids, whose paths are the annotations' ``mp3_path``: the ``pons`` rule). Each path is
refused in one line naming its row, or accepted as the file it resolves to; a file listed
twice is refused naming both rows; and no file outside the root is opened.
"""

from __future__ import annotations

import csv
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tagger.cli.main import main as tagger_main
from tagger.confine import NAMED_PROBLEMS, confine_all, confined
from tagger.data.coursework import CourseworkDataModule
from tagger.data.tagsets import MERGED50, MTAT_COLUMNS
from tagger.errors import ConfigError
from tagger.prepare.folder import folder_plan
from tagger.prepare.jamendo import jamendo_plan
from tagger.prepare.mtat import ANNOTATIONS, mtat_plan

EXAMPLES = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
#: The root's files (a part folder ``0`` with a subfolder ``c``, as MTAT has parts).
FILES = {"": "y.wav", "0": "0/x.wav", "0/c": "0/c/z.wav"}
LEVELS = ("", "0", "0/c")
#: Files the sources' fixed rows name (never a generated path's file).
BASE_FILES = ("train.wav", "val.wav", "test.wav")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class World:
    """``base/cw/samples`` is the root (the coursework's ``samples/``; every other source's
    root too); ``base/outside`` and ``base/cw/stray.wav`` lie outside it."""

    base: Path

    @property
    def cw(self) -> Path:
        return self.base / "cw"

    @property
    def root(self) -> Path:
        return self.cw / "samples"

    @property
    def data(self) -> Path:
        return self.base / "data"

    def outside(self, path: Path) -> bool:
        """Whether ``path`` is one of the files outside the root."""
        resolved = path.resolve()
        return (
            resolved.is_relative_to((self.base / "outside").resolve())
            or resolved == (self.cw / "stray.wav").resolve()
        )


def make_world(base: Path) -> World:
    world = World(base)
    for name in [*FILES.values(), *BASE_FILES]:
        (world.root / name).parent.mkdir(parents=True, exist_ok=True)
        (world.root / name).write_bytes(b"RIFF")
    (base / "outside").mkdir()
    (base / "outside" / "secret.wav").write_bytes(b"RIFF")
    (world.cw / "stray.wav").write_bytes(b"RIFF")
    (world.cw / "annotations").mkdir()
    world.data.mkdir()
    links = {
        "out_file.wav": base / "outside" / "secret.wav",  # absolute target, out
        "0/out_file.wav": Path("../../../outside/secret.wav"),  # relative target, out
        "out_dir": base / "outside",  # a folder out
        "in_link.wav": Path("0/x.wav"),  # a file in
        "in_dir": Path("0"),  # a folder in
    }
    for name, target in links.items():
        (world.root / name).symlink_to(target)
    return world


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return make_world(tmp_path_factory.mktemp("gate"))


@dataclass(frozen=True)
class Shape:
    """A path as a data file gives it (``{root}`` and ``{base}`` filled in by ``text``) and
    what it is: ``inside`` (then ``file`` is the root's file it names), ``outside`` or
    ``absolute``."""

    template: str
    kind: str
    file: str = ""

    def text(self, world: World) -> str:
        return self.template.format(root=world.root, base=world.base)


@st.composite
def dotdot(draw: st.DrawFn) -> Shape:
    """Down ``k`` folders, up ``m`` (``..`` at each depth), then a file: back inside the
    root, or out of it from one, two or three levels above."""
    k = draw(st.integers(0, 2))
    m = draw(st.integers(0, k + 3))
    parts = [*filter(None, LEVELS[k].split("/")), *[".."] * m]
    if m <= k:
        file = FILES[LEVELS[k - m]]
        return Shape("/".join([*parts, file.rsplit("/", 1)[-1]]), "inside", file)
    tails = {
        1: [("samples/y.wav", "y.wav"), ("stray.wav", "")],
        2: [("cw/samples/0/x.wav", "0/x.wav"), ("outside/secret.wav", "")],
        3: [("{base.name}/outside/secret.wav", "")],  # base's parent, then base by name
    }[m - k]
    tail, file = draw(st.sampled_from(tails))
    return Shape("/".join([*parts, tail]), "inside" if file else "outside", file)


INSIDE_SPELLINGS = [
    Shape("0/x.wav", "inside", "0/x.wav"),
    Shape("0/./x.wav", "inside", "0/x.wav"),
    Shape("0//x.wav", "inside", "0/x.wav"),
    Shape("0/c/../x.wav", "inside", "0/x.wav"),
    Shape("./0/x.wav", "inside", "0/x.wav"),
    Shape("in_link.wav", "inside", "0/x.wav"),  # a file symlink in
    Shape("in_dir/x.wav", "inside", "0/x.wav"),  # a folder symlink in
    Shape("in_dir/c/z.wav", "inside", "0/c/z.wav"),
    Shape("0/c/./z.wav", "inside", "0/c/z.wav"),
    Shape("./y.wav", "inside", "y.wav"),
    Shape("0/../y.wav", "inside", "y.wav"),
]
OUTSIDE = [
    Shape("out_file.wav", "outside"),  # a file symlink out (absolute target)
    Shape("0/out_file.wav", "outside"),  # a file symlink out (relative target)
    Shape("out_dir/secret.wav", "outside"),  # through a folder symlink out
    Shape("0/c/../../out_dir/secret.wav", "outside"),
    Shape("{root}/y.wav", "absolute"),  # absolute, even inside the root
    Shape("{base}/outside/secret.wav", "absolute"),
]
SHAPES = st.one_of(dotdot(), st.sampled_from(INSIDE_SPELLINGS + OUTSIDE))


def test_dotdot_shapes_cover_every_depth_and_direction() -> None:
    """The generator reaches ``..`` from each depth, back in and out of the root."""
    seen: set[tuple[int, str]] = set()

    @given(dotdot())
    @settings(max_examples=300, deadline=None, database=None)
    def collect(shape: Shape) -> None:
        seen.add((shape.template.count(".."), shape.kind))

    collect()
    assert {(depth, "inside") for depth in range(3)} <= seen
    assert {(depth, "outside") for depth in range(1, 6)} <= seen


# --- the sources: each writes the generated paths into its data file and plans -------------


@dataclass(frozen=True)
class Row:
    """Where a generated path is in its data file: the file, ``line``/``row``/``entry``, N."""

    file: str
    unit: str
    number: int

    def __str__(self) -> str:
        return f"{self.file} {self.unit} {self.number}"


#: What a source gives for the paths it wrote: each path's row, and a thunk that plans and
#: returns the resolved file of each path's clip (None where the rule drops the clip).
Planned = tuple[list[Row], Callable[[], list[Path | None]]]
#: A source: (world, paths, their splits) -> ``Planned``.
Source = Callable[[World, list[str], list[str]], Planned]


def folder_source(world: World, paths: list[str], splits: list[str]) -> Planned:
    labels = world.data / "labels.csv"
    with open(labels, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "tags", "split"])
        writer.writerows([path, "beat", split] for path, split in zip(paths, splits, strict=True))
    rows = [Row(f"--labels {labels}", "line", i + 2) for i in range(len(paths))]

    def plan() -> list[Path | None]:
        return [clip.path for clip in folder_plan(world.root, labels, 8000, 1.0).clips]

    return rows, plan


def write_annotations(root: Path, paths: list[str]) -> list[str]:
    """``annotations_final.csv`` listing ``paths`` (every clip tagged guitar): clip ids."""
    ids = [str(100 + i) for i in range(len(paths))]
    tags = ["1" if column == "guitar" else "0" for column in MTAT_COLUMNS]
    with open(root / ANNOTATIONS, "w", newline="") as f:
        writer = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_ALL, lineterminator="\n")
        writer.writerow(["clip_id", *MTAT_COLUMNS, "mp3_path"])
        writer.writerows([clip_id, *tags, path] for clip_id, path in zip(ids, paths, strict=True))
    return ids


def mtat_source(rule: str) -> Source:
    """MTAT with the paths in ``annotations_final.csv``, split by ``rule`` (``dieleman``,
    ``coursework`` or ``pons``: Pons files listing each clip id in its split)."""

    def source(world: World, paths: list[str], splits: list[str]) -> Planned:
        ids = write_annotations(world.root, paths)
        spec = rule
        if rule == "pons":
            pons = world.data / "pons"
            pons.mkdir(exist_ok=True)
            for split in SPLITS:
                lines = [f"{i}\t[0.0]\n" for i, s in zip(ids, splits, strict=True) if s == split]
                (pons / f"{split}_gt_mtt.tsv").write_text("".join(lines))
            spec = f"pons:{pons}"
        rows = [Row(str(world.root / ANNOTATIONS), "line", i + 2) for i in range(len(paths))]

        def plan() -> list[Path | None]:
            by_id = {c.clip_id: c.path for c in mtat_plan(world.root, 16000, "top50", spec).clips}
            return [by_id.get(clip_id) for clip_id in ids]

        return rows, plan

    return source


def clean_source(suffix: str) -> Source:
    """MTAT's ``clean:DIR`` rule with the paths in its split files (``.txt`` or ``.npy``);
    the annotations list the root's files as they are."""

    def source(world: World, paths: list[str], splits: list[str]) -> Planned:
        listed = [*FILES.values(), *BASE_FILES]
        write_annotations(world.root, listed)
        clean = world.data / f"clean{suffix}"
        clean.mkdir(exist_ok=True)
        rows: list[Row | None] = [None] * len(paths)
        for split, stem in zip(SPLITS, ("train", "valid", "test"), strict=True):
            mine = [i for i, s in enumerate(splits) if s == split]
            file = clean / f"{stem}{suffix}"
            entries = [paths[i] for i in mine]
            if suffix == ".npy":
                np.save(file, np.array([f"{n}\t{p}" for n, p in enumerate(entries)], dtype=str))
            else:
                file.write_text("".join(f"{p}\n" for p in entries))
            for number, i in enumerate(mine, start=1):
                rows[i] = Row(str(file), "entry" if suffix == ".npy" else "line", number)

        def plan() -> list[Path | None]:
            clips = mtat_plan(world.root, 16000, "top50", f"clean:{clean}").clips
            by_split = {split: [c.path for c in clips if c.split == split] for split in SPLITS}
            resolved = [(world.root / p).resolve() for p in paths]
            return [
                target if target in by_split[split] else None
                for target, split in zip(resolved, splits, strict=True)
            ]

        return rows, plan

    return source


def jamendo_source(world: World, paths: list[str], splits: list[str]) -> Planned:
    folder = world.data / "jsplits" / "split-0"
    folder.mkdir(parents=True, exist_ok=True)
    rows: list[Row | None] = [None] * len(paths)
    for split, name in zip(SPLITS, ("train", "validation", "test"), strict=True):
        file = folder / f"autotagging_top50tags-{name}.tsv"
        lines = ["TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS"]
        for i in [i for i, s in enumerate(splits) if s == split]:
            lines.append(f"track_{i}\tartist\talbum\t{paths[i]}\t1.0\tgenre---rock")
            rows[i] = Row(str(file), "line", len(lines))
        lines.append(f"base_{split}\tartist\talbum\t{split}.wav\t1.0\tgenre---pop")  # never empty
        file.write_text("\n".join(lines) + "\n")

    def plan() -> list[Path | None]:
        clips = jamendo_plan(world.root, world.data / "jsplits", 16000).clips
        by_id = {clip.clip_id: clip.path for clip in clips}
        return [by_id.get(f"track_{i}") for i in range(len(paths))]

    return rows, plan


def coursework_source(world: World, paths: list[str], splits: list[str]) -> Planned:
    """The two-pickle layout: train paths in ``train_labels.pkl``, the rest in
    ``val_labels.pkl`` (the test split), a fixed row last in each."""
    annotations = world.cw / "annotations"
    pickles = {"train": "train_labels.pkl", "test": "val_labels.pkl"}
    chosen = ["train" if split == "train" else "test" for split in splits]
    rows: list[Row | None] = [None] * len(paths)
    label = np.ones(len(MERGED50))
    for split, name in pickles.items():
        mine = [i for i, s in enumerate(chosen) if s == split]
        records = [{"file_path": paths[i], "label": label, "part": "0"} for i in mine]
        records.append({"file_path": f"{split}.wav", "label": label, "part": "0"})
        pd.DataFrame(records).to_pickle(annotations / name, protocol=4)
        for number, i in enumerate(mine):
            rows[i] = Row(str(annotations / name), "row", number)

    def plan() -> list[Path | None]:
        data = CourseworkDataModule(
            str(world.cw), sample_rate=12000, n_subclips=1, subclip_len=1000, batch_size=1
        )
        loaded = data.load_splits()
        by_split = {split: dict(zip(d.clip_ids, d.source.paths, strict=True))
                    for split, d in loaded.items()}  # fmt: skip
        return [by_split[split].get(path) for path, split in zip(paths, chosen, strict=True)]

    return rows, plan


SOURCES: dict[str, Source] = {
    "folder": folder_source,
    "mtat-dieleman": mtat_source("dieleman"),
    "mtat-coursework": mtat_source("coursework"),
    "mtat-pons": mtat_source("pons"),
    "mtat-clean-txt": clean_source(".txt"),
    "mtat-clean-npy": clean_source(".npy"),
    "jamendo": jamendo_source,
    "coursework": coursework_source,
}
#: The root's name in each source's messages.
ROOT_NAMES = {"jamendo": "--audio", "coursework": "data.root's samples folder"}

# --- no file outside the root is opened: every Python-level open is audited ---------------

_OPENED: list[str] = []
_WATCHING: list[bool] = [False]


def _audit(event: str, args: tuple) -> None:
    if _WATCHING[0] and event == "open" and isinstance(args[0], str | bytes):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)


@contextmanager
def no_open_outside(world: World) -> Iterator[None]:
    """Fail if anything opens a file outside the root: Python's ``open`` and ``os.open``
    (numpy, pandas, csv) through an audit hook, and libsndfile through ``SoundFile``."""
    _OPENED.clear()
    _WATCHING[0] = True
    sound_file = soundfile.SoundFile

    def watched(file: object, *args: object, **kwargs: object) -> soundfile.SoundFile:
        if isinstance(file, str | bytes | os.PathLike):
            _OPENED.append(os.fsdecode(file))
        return sound_file(file, *args, **kwargs)

    soundfile.SoundFile = watched
    try:
        yield
    finally:
        _WATCHING[0] = False
        soundfile.SoundFile = sound_file
    opened = [path for path in _OPENED if world.outside(Path(path))]
    assert not opened, f"opened outside the root: {opened}"


@pytest.mark.parametrize("opener", ["open", "soundfile"])
def test_the_watch_sees_an_open_outside(world: World, opener: str) -> None:
    """``no_open_outside`` itself can fail: it sees Python's and libsndfile's opens."""
    secret = world.base / "outside" / "secret.wav"
    with pytest.raises(AssertionError, match="opened outside the root"), no_open_outside(world):
        if opener == "open":
            secret.open("rb").close()
        else:
            with pytest.raises(soundfile.LibsndfileError):  # 4 bytes: opened, then refused
                soundfile.SoundFile(secret)


def root_name(source: str) -> str:
    return ROOT_NAMES.get(source, "--root")


@pytest.mark.parametrize("source", SOURCES)
@EXAMPLES
@given(shape=SHAPES, split=st.sampled_from(SPLITS))
def test_every_source_refuses_a_path_out_of_its_root_in_one_line(
    world: World, source: str, shape: Shape, split: str
) -> None:
    """A path that leaves the root (or is absolute) is refused in one line naming its row
    and the root; one inside is planned as the file it resolves to."""
    rows, plan = SOURCES[source](world, [shape.text(world)], [split])
    with no_open_outside(world):
        if shape.kind == "inside":
            (planned,) = plan()
            dropped = source in ("mtat-dieleman", "mtat-coursework") and "/" not in shape.file
            assert planned == (None if dropped else (world.root / shape.file).resolve())
            return
        with pytest.raises(ConfigError) as error:
            plan()
    (line,) = str(error.value).splitlines()
    assert line.startswith(f"{rows[0]}: ")
    if shape.kind == "absolute":
        assert line.endswith(f"is absolute; give it relative to {root_name(source)}")
    else:
        assert f"leads outside {root_name(source)}" in line and str(world.root) in line


def both_rows(first: Row, second: Row) -> str:
    """How one line names two rows: ``F lines 2 and 5``, or ``F line 2 and G line 5``."""
    if (first.file, first.unit) == (second.file, second.unit):
        return f"{first.file} {first.unit}s {first.number} and {second.number}"
    return f"{first} and {second}"


@pytest.mark.parametrize("source", SOURCES)
@EXAMPLES
@given(
    pair=st.sampled_from(INSIDE_SPELLINGS).flatmap(
        lambda one: st.tuples(
            st.just(one), st.sampled_from([s for s in INSIDE_SPELLINGS if s.file == one.file])
        )
    ),
    splits=st.tuples(st.sampled_from(SPLITS), st.sampled_from(SPLITS)),
)
def test_every_source_refuses_one_file_in_two_rows(
    world: World, source: str, pair: tuple[Shape, Shape], splits: tuple[str, str]
) -> None:
    """Two rows naming one file (two spellings, a symlink in and its target, in one split or
    two) are refused in one line naming both rows, judged on the resolved path."""
    first, second = pair
    rows, plan = SOURCES[source](world, [first.text(world), second.text(world)], list(splits))
    with no_open_outside(world), pytest.raises(ConfigError) as error:
        plan()
    (line,) = str(error.value).splitlines()
    named = {both_rows(*rows), both_rows(*rows[::-1])}  # the first row as the source reads them
    assert any(line.startswith(f"{text}: both list {first.file}") for text in named), line


@pytest.mark.parametrize("source", SOURCES)
@EXAMPLES
@given(pair=st.permutations(sorted(FILES.values())).map(lambda files: files[:2]))
def test_different_files_are_not_duplicates(world: World, source: str, pair: list[str]) -> None:
    _, plan = SOURCES[source](world, pair, ["train", "test"])
    with no_open_outside(world):
        planned = plan()
    for file, path in zip(pair, planned, strict=True):
        assert path in (None, (world.root / file).resolve())


def test_hard_links_are_one_file(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    os.link(world.root / "y.wav", world.root / "hard.wav")
    _, plan = folder_source(world, ["y.wav", "hard.wav"], ["train", "test"])
    with pytest.raises(ConfigError, match=r"lines 2 and 3: both list hard.wav; list each file"):
        plan()


# --- confined itself ---------------------------------------------------------------------


@EXAMPLES
@given(shape=SHAPES)
def test_confined_resolves_or_refuses_each_shape(world: World, shape: Shape) -> None:
    where = "data.csv line 7"
    if shape.kind == "inside":
        target = confined(world.root, shape.text(world), where)
        assert target == (world.root / shape.file).resolve() and target.is_absolute()
        return
    with pytest.raises(ConfigError) as error:
        confined(world.root, shape.text(world), where, field="mp3_path", root_name="--root")
    (line,) = str(error.value).splitlines()
    assert line.startswith(f"data.csv line 7: mp3_path {shape.text(world)!r} ")


@pytest.mark.parametrize(
    ("relative", "message"),
    [
        ("", "names --root {root} itself, not a file under it"),
        (".", "names --root {root} itself, not a file under it"),
        ("0/..", "names --root {root} itself, not a file under it"),
        ("a\0b.wav", "is not a usable file name"),
        ("loop/x.wav", "is not a usable file name"),
        ("../samples", "names --root {root} itself"),
    ],
)
def test_confined_refuses_names_that_are_no_file(
    tmp_path: Path, relative: str, message: str
) -> None:
    world = make_world(tmp_path)
    (world.root / "loop").symlink_to("loop")
    with pytest.raises(ConfigError) as error:
        confined(world.root, relative, "x.csv line 2", root_name="--root")
    (line,) = str(error.value).splitlines()
    assert line.startswith(f"x.csv line 2: path {relative!r} ")
    assert message.format(root=world.root) in line


def test_confined_through_a_symlinked_root(tmp_path: Path) -> None:
    """A root given through a symlink confines to the folder it leads to."""
    world = make_world(tmp_path / "w")
    (tmp_path / "alias").symlink_to(world.root)
    assert confined(tmp_path / "alias", "0/x.wav", "f line 2") == (world.root / "0/x.wav").resolve()
    with pytest.raises(ConfigError, match="leads outside"):
        confined(tmp_path / "alias", "../stray.wav", "f line 2")


def test_confine_all_names_the_first_problems_and_counts_the_rest(tmp_path: Path) -> None:
    world = make_world(tmp_path)
    rows = [(f"../stray{i}.wav", f"f line {i}") for i in range(NAMED_PROBLEMS + 4)]
    with pytest.raises(ConfigError) as error:
        confine_all(world.root, rows)
    lines = str(error.value).splitlines()
    assert len(lines) == NAMED_PROBLEMS + 1 and lines[-1] == "... and 4 more like these"


# --- the command line: one line, the right exit status, no traceback, nothing written ----


def run_tagger(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, *argv: str
) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["tagger", *argv])
    with pytest.raises(SystemExit) as done:
        tagger_main()
    return int(done.value.code), capsys.readouterr().err


@pytest.mark.parametrize("source", ["folder", "mtat-dieleman", "mtat-clean-txt", "jamendo"])
def test_prepare_refuses_a_path_out_of_the_root_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, source: str
) -> None:
    world = make_world(tmp_path / "w")
    rows, _ = SOURCES[source](world, ["0/x.wav", "out_dir/secret.wav"], ["train", "test"])
    out = tmp_path / "store"
    args = {
        "folder": ["folder", "--root", str(world.root), "--labels",
                   str(world.data / "labels.csv")],
        "mtat-dieleman": ["mtat", "--root", str(world.root)],
        "mtat-clean-txt": ["mtat", "--root", str(world.root), "--split",
                           f"clean:{world.data / 'clean.txt'}"],
        "jamendo": ["jamendo", "--audio", str(world.root), "--splits",
                    str(world.data / "jsplits")],
    }[source]  # fmt: skip
    with no_open_outside(world):
        status, stderr = run_tagger(
            monkeypatch, capsys, "prepare", *args, "--out", str(out), "--workers", "1"
        )
    assert status == 2 and "Traceback" not in stderr
    (line,) = stderr.splitlines()
    assert line.startswith(f"tagger: error: {rows[1]}: ")
    assert "'out_dir/secret.wav' leads outside" in line
    assert not out.exists()


def test_check_refuses_a_coursework_path_out_of_samples_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    world = make_world(tmp_path / "w")
    rows, _ = coursework_source(world, ["0/x.wav", "../stray.wav"], ["train", "test"])
    with no_open_outside(world):
        status, stderr = run_tagger(
            monkeypatch, capsys, "check", "data=coursework", f"data.root={world.cw}"
        )
    assert status == 1 and "Traceback" not in stderr
    (line,) = [text for text in stderr.splitlines() if text.startswith("tagger check: error:")]
    assert f"{rows[1]}: file_path '../stray.wav' leads outside data.root's samples" in line
