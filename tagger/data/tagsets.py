"""MagnaTagATune's 188 raw tag columns and the tag sets built from them (``top50``, ``merged50``).

A tag set maps each of its tags to one or more raw columns; a clip has the tag if any
of those columns is 1. ``top50`` takes single columns; ``merged50`` merges synonyms
(``classical`` = classical, clasical or classic). A tag-set file does the same in text:
one tag per line, either a raw column name or ``merged/synonym/synonym`` (the first
name is the tag's name); blank lines and lines starting with ``#`` are ignored.
docs/mtat.md ("Tag sets") gives the source of these lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tagger.errors import ConfigError

#: The 188 tag columns of ``annotations_final.csv``, in column order.
MTAT_COLUMNS: tuple[str, ...] = (
    "no voice", "singer", "duet", "plucking", "hard rock", "world", "bongos", "harpsichord",
    "female singing", "clasical", "sitar", "chorus", "female opera", "male vocal", "vocals",
    "clarinet", "heavy", "silence", "beats", "men", "woodwind", "funky", "no strings", "chimes",
    "foreign", "no piano", "horns", "classical", "female", "no voices", "soft rock", "eerie",
    "spacey", "jazz", "guitar", "quiet", "no beat", "banjo", "electric", "solo", "violins",
    "folk", "female voice", "wind", "happy", "ambient", "new age", "synth", "funk",
    "no singing", "middle eastern", "trumpet", "percussion", "drum", "airy", "voice",
    "repetitive", "birds", "space", "strings", "bass", "harpsicord", "medieval", "male voice",
    "girl", "keyboard", "acoustic", "loud", "classic", "string", "drums", "electronic",
    "not classical", "chanting", "no violin", "not rock", "no guitar", "organ", "no vocal",
    "talking", "choral", "weird", "opera", "soprano", "fast", "acoustic guitar",
    "electric guitar", "male singer", "man singing", "classical guitar", "country", "violin",
    "electro", "reggae", "tribal", "dark", "male opera", "no vocals", "irish", "electronica",
    "horn", "operatic", "arabic", "lol", "low", "instrumental", "trance", "chant", "strange",
    "drone", "synthesizer", "heavy metal", "modern", "disco", "bells", "man", "deep",
    "fast beat", "industrial", "hard", "harp", "no flute", "jungle", "pop", "lute",
    "female vocal", "oboe", "mellow", "orchestral", "viola", "light", "echo", "piano",
    "celtic", "male vocals", "orchestra", "eastern", "old", "flutes", "punk", "spanish", "sad",
    "sax", "slow", "male", "blues", "vocal", "indian", "no singer", "scary", "india", "woman",
    "woman singing", "rock", "dance", "piano solo", "guitars", "no drums", "jazzy", "singing",
    "cello", "calm", "female vocals", "voices", "different", "techno", "clapping", "house",
    "monks", "flute", "not opera", "not english", "oriental", "beat", "upbeat", "soft",
    "noise", "choir", "female singer", "rap", "metal", "hip hop", "quick", "water", "baroque",
    "women", "fiddle", "english",
)  # fmt: skip

#: Dieleman (2014) / Won et al. (2020): the 50 most frequent raw columns, in split-file order.
TOP50: tuple[str, ...] = (
    "guitar", "classical", "slow", "techno", "strings", "drums", "electronic", "rock", "fast",
    "piano", "ambient", "beat", "violin", "vocal", "synth", "female", "indian", "opera", "male",
    "singing", "vocals", "no vocals", "harpsichord", "loud", "quiet", "flute", "woman",
    "male vocal", "no vocal", "pop", "soft", "sitar", "solo", "man", "classic", "choir",
    "voice", "new age", "dance", "male voice", "female vocal", "beats", "harp", "cello",
    "no voice", "weird", "country", "metal", "female voice", "choral",
)  # fmt: skip

#: The coursework's 50 tags after merging synonyms, in alphabetical order.
MERGED50: tuple[str, ...] = (
    "ambient", "baroque", "bass", "beat", "cello", "chant", "choir", "classical", "country",
    "dance", "drum", "eastern", "electro", "fast", "female", "flute", "folk", "foreign",
    "guitar", "hard", "harp", "harpsichord", "heavy", "india", "jazz", "loud", "male", "modern",
    "new age", "no beat", "no piano", "no singer", "opera", "orchestra", "piano", "pop",
    "quiet", "rock", "singer", "sitar", "slow", "soft", "solo", "strange", "string", "synth",
    "techno", "trance", "violin", "vocal",
)  # fmt: skip

#: Synonym groups merged by ``merged50``; the first name is the merged tag.
SYNONYMS: tuple[tuple[str, ...], ...] = (
    ("beat", "beats"),
    ("chant", "chanting"),
    ("choir", "choral"),
    ("classical", "clasical", "classic"),
    ("drum", "drums"),
    ("electro", "electronic", "electronica", "electric"),
    ("fast", "fast beat", "quick"),
    ("female", "female singer", "female singing", "female vocals", "female voice", "woman",
     "woman singing", "women"),
    ("flute", "flutes"),
    ("guitar", "guitars"),
    ("hard", "hard rock"),
    ("harpsichord", "harpsicord"),
    ("heavy", "heavy metal", "metal"),
    ("horn", "horns"),
    ("india", "indian"),
    ("jazz", "jazzy"),
    ("male", "male singer", "male vocal", "male vocals", "male voice", "man", "man singing",
     "men"),
    ("no beat", "no drums"),
    ("no singer", "no singing", "no vocal", "no vocals", "no voice", "no voices",
     "instrumental"),
    ("opera", "operatic"),
    ("orchestra", "orchestral"),
    ("quiet", "silence"),
    ("singer", "singing"),
    ("space", "spacey"),
    ("string", "strings"),
    ("synth", "synthesizer"),
    ("violin", "violins"),
    ("vocal", "vocals", "voice", "voices"),
    ("strange", "weird"),
)  # fmt: skip


@dataclass(frozen=True)
class TagSet:
    """Tags built from raw MTAT columns.

    Attributes:
        name: ``top50``, ``merged50`` or the path of a tag-set file.
        tags: tag names, in label-column order.
        columns: for each tag, the indices (into ``MTAT_COLUMNS``) of the raw columns it merges.
    """

    name: str
    tags: tuple[str, ...]
    columns: tuple[tuple[int, ...], ...]

    def labels(self, raw: np.ndarray) -> np.ndarray:
        """Raw 0/1 columns [clips, 188] -> this set's 0/1 labels [clips, len(tags)] (uint8)."""
        return np.stack([raw[:, list(cols)].max(axis=1) for cols in self.columns], axis=1).astype(
            np.uint8
        )


def _column(name: str, source: str) -> int:
    try:
        return MTAT_COLUMNS.index(name)
    except ValueError:
        raise ConfigError(
            f"{source}: tag {name!r} is not one of the 188 columns of annotations_final.csv "
            "(see MTAT_COLUMNS in tagger/data/tagsets.py)"
        ) from None


def _build(name: str, groups: list[tuple[str, ...]], source: str) -> TagSet:
    tags = tuple(group[0] for group in groups)
    duplicates = sorted({tag for tag in tags if tags.count(tag) > 1})
    if duplicates:
        raise ConfigError(f"{source}: tag(s) listed twice: {', '.join(duplicates)}")
    columns = tuple(tuple(_column(n, source) for n in group) for group in groups)
    return TagSet(name, tags, columns)


def read_tagset_file(path: Path) -> TagSet:
    """A tag set from a text file (format in the module docstring)."""
    if not path.is_file():
        raise ConfigError(f"--tags {path}: no such file (expected top50, merged50 or a file)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise ConfigError(f"--tags {path}: not a UTF-8 text file ({error})") from None
    groups = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            groups.append(tuple(name.strip() for name in line.split("/")))
    if not groups:
        raise ConfigError(f"--tags {path}: the file lists no tags (one tag per line)")
    return _build(str(path), groups, f"--tags {path}")


def tagset(spec: str) -> TagSet:
    """``top50``, ``merged50`` or the path of a tag-set file -> the ``TagSet``."""
    if spec == "top50":
        return _build("top50", [(tag,) for tag in TOP50], "top50")
    if spec == "merged50":
        merged = {group[0]: group for group in SYNONYMS}
        return _build("merged50", [merged.get(tag, (tag,)) for tag in MERGED50], "merged50")
    return read_tagset_file(Path(spec))
