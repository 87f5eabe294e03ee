"""Clip store vs one float32 .npy per clip (the coursework's way): size, read speed, memory.

    python benchmarks/store_bench.py [--sizes 500 2000] [--dir outputs/store_bench] [--keep]

For each size N it writes N MTAT-sized clips (349,500 samples: 29.125 s at 12 kHz) both
as a clip store (written by tagger/prepare/writer.py, read by tagger/data/store.py) and
as separate float32 .npy files read by the coursework reader (tagger/data/coursework.py),
then reads each in a fresh subprocess the way training does: ``ClipDataset`` items of
[10, 1, 34950] in random batches of 10, one pass over all N clips with the files evicted
from the page cache (cold, as from disk), then a second pass (warm, from the page cache).
It prints bytes per clip, clips/s for both passes and the subprocess's peak resident
memory (ru_maxrss), next to the peak of a subprocess that imports the same modules and
reads nothing. Each case runs ``--repeats`` times: the best throughput and the highest
peak are shown. The written files are deleted at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tagger.data.coursework import CLIP_SAMPLES, NpyClipFiles  # noqa: E402
from tagger.data.store import ClipStore  # noqa: E402
from tagger.prepare.writer import StoreClip, StorePlan, StoreWriter  # noqa: E402

BATCH, N_SUBCLIPS, SUBCLIP_LEN, TAGS = 10, 10, 34_950, 50


def write_clips(directory: Path, n_clips: int) -> None:
    """N random int16-scale clips as a store (``store/``) and as float32 .npy (``npy/``)."""
    rng = np.random.default_rng(0)
    labels = (rng.random((n_clips, TAGS)) < 0.1).astype(np.uint8)
    paths = [f"train/{'0123456789abcdef'[i % 16]}/clip_{i:05d}.npy" for i in range(n_clips)]
    clips = [StoreClip(p, Path(p), p, "train", labels[i]) for i, p in enumerate(paths)]
    plan = StorePlan(clips, [f"t{k}" for k in range(TAGS)], 12000, CLIP_SAMPLES)
    writer = StoreWriter(directory / "store", plan)
    for i, path in enumerate(paths):
        clip = rng.integers(-20000, 20000, CLIP_SAMPLES, dtype=np.int16)
        writer.add(i, clip)
        if i % 64 == 63:
            writer.commit()
        (directory / "npy" / path).parent.mkdir(parents=True, exist_ok=True)
        np.save(directory / "npy" / path, clip.astype(np.float32))
    writer.finish()
    np.save(directory / "labels.npy", labels)
    os.sync()


def files_of(directory: Path, kind: str) -> list[Path]:
    return sorted(path for path in (directory / kind).rglob("*") if path.is_file())


def evict(files: list[Path]) -> None:
    """Drop ``files`` from the OS page cache, so the next read comes from disk."""
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def read_case(directory: Path, kind: str) -> dict[str, float]:
    """One case, run in its own process: read every clip twice in random batches of 10."""
    import torch
    from torch.utils.data import DataLoader, RandomSampler, default_convert

    from tagger.data.clips import ClipDataset
    from tagger.data.sources import ArrayClips

    labels = np.load(directory / "labels.npy")
    if kind == "store":
        store = ClipStore(directory / "store")
        audio, ids = store.audio, store.clip_ids
    elif kind == "npy":
        ids = [str(p.relative_to(directory / "npy")) for p in files_of(directory, "npy")]
        audio = NpyClipFiles([directory / "npy" / i for i in ids], ids)
    warm_up = ClipDataset(
        ArrayClips(np.zeros((BATCH, CLIP_SAMPLES), np.int16)),
        labels[:BATCH],
        [""] * BATCH,
        N_SUBCLIPS,
        SUBCLIP_LEN,
    )
    # first-call costs, outside the timing
    for _ in DataLoader(warm_up, batch_size=BATCH, collate_fn=default_convert):
        pass
    result = {"kind": kind}
    if kind != "baseline":
        dataset = ClipDataset(audio, labels, ids, N_SUBCLIPS, SUBCLIP_LEN)
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(0))
        loader = DataLoader(dataset, batch_size=BATCH, sampler=sampler, collate_fn=default_convert)
        for name in ("cold", "warm"):
            started = time.perf_counter()
            for batch in loader:
                assert batch["audio"].shape[1:] == (N_SUBCLIPS, 1, SUBCLIP_LEN)
            result[f"{name}_clips_per_s"] = len(dataset) / (time.perf_counter() - started)
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def run_case(directory: Path, kind: str, repeats: int) -> dict[str, float]:
    """Best throughput and highest peak memory over ``repeats`` fresh subprocesses (on a
    shared machine the best run is the one least slowed down by other processes)."""
    results = []
    for _ in range(repeats):
        if kind != "baseline":
            evict(files_of(directory, kind))
        command = [sys.executable, __file__, "--read", kind, "--dir", str(directory)]
        done = subprocess.run(command, capture_output=True, text=True, check=True)
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return {key: max(result[key] for result in results) for key in results[0] if key != "kind"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[500, 2000])
    parser.add_argument("--dir", type=Path, default=REPO_ROOT / "outputs" / "store_bench")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case")
    parser.add_argument("--keep", action="store_true", help="keep the written files")
    parser.add_argument("--read", help=argparse.SUPPRESS)  # internal: run one case
    args = parser.parse_args()
    if args.read:
        print(json.dumps(read_case(args.dir, args.read)))
        return

    row = "{:>6} {:<15} {:>11} {:>13} {:>13} {:>13}"
    print(
        row.format("clips", "format", "bytes/clip", "cold clips/s", "warm clips/s", "peak RSS MiB")
    )
    for n_clips in args.sizes:
        directory = args.dir / f"n{n_clips}"
        shutil.rmtree(directory, ignore_errors=True)
        write_clips(directory, n_clips)
        for kind, name in (("store", "store (int16)"), ("npy", ".npy (float32)")):
            result = run_case(directory, kind, args.repeats)
            size = sum(path.stat().st_size for path in files_of(directory, kind)) / n_clips
            cold, warm = result["cold_clips_per_s"], result["warm_clips_per_s"]
            peak = result["peak_rss_mib"]
            print(
                row.format(
                    n_clips, name, f"{size:,.0f}", f"{cold:.1f}", f"{warm:.1f}", f"{peak:.0f}"
                )
            )
        peak = run_case(directory, "baseline", args.repeats)["peak_rss_mib"]
        print(row.format(n_clips, "(imports only)", "", "", "", f"{peak:.0f}"))
        if not args.keep:
            shutil.rmtree(directory)


if __name__ == "__main__":
    main()
