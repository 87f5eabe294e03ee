"""``tagger prepare`` under faults: two writers of one store, a full disk, an impossible --out."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tagger.cli import prepare as prepare_cli
from tagger.data.store import ClipStore, partial_dir
from tagger.lock import LockBusyError
from tagger.prepare.audio import decode_clip
from tagger.prepare.writer import lock_path, writer_lock
from tests.conftest import REPO_ROOT
from tests.test_data_store import folder_args, write_many

#: ``tagger prepare`` that decodes 0.1 s slower per file, so that its run takes seconds.
SLOWER_PREPARE = (
    "import time; from tagger.prepare import build; decode = build.decode_or_reason; "
    "build.decode_or_reason = lambda *a: (time.sleep(0.1), decode(*a))[1]; "
    "from tagger.cli.prepare import main; main()"
)


def run_main(argv: list[str], monkeypatch: pytest.MonkeyPatch) -> int:
    """``tagger prepare`` in this process; its exit status."""
    monkeypatch.setattr(sys, "argv", ["tagger prepare", *argv])
    try:
        prepare_cli.main()
    except SystemExit as done:
        return int(done.code or 0)
    return 0


def empty_files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file() and path.stat().st_size == 0]


@pytest.mark.slow  # two real prepares racing for one store
def test_two_prepares_of_one_store_one_writes_the_other_stops_at_once(tmp_path: Path) -> None:
    write_many(tmp_path / "audio", 30)
    out = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-c", SLOWER_PREPARE, *folder_args(tmp_path / "audio", out)]
    runs = [
        subprocess.Popen(
            [*command, "--workers", "1"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(2)
    ]
    finished_while_other_ran = {}
    deadline = time.time() + 120
    while any(run.poll() is None for run in runs) and time.time() < deadline:
        for i, run in enumerate(runs):
            if run.poll() is not None and i not in finished_while_other_ran:
                finished_while_other_ran[i] = runs[1 - i].poll() is None
        time.sleep(0.01)
    results = [(run.returncode, *(s.decode() for s in run.communicate(timeout=10))) for run in runs]

    statuses = sorted(status for status, _, _ in results)
    assert statuses == [0, 2], results
    winner = next(i for i, (status, _, _) in enumerate(results) if status == 0)
    _, loser_out, loser_err = results[1 - winner]
    assert finished_while_other_ran[1 - winner]  # it stopped while the winner still worked
    assert loser_out == "" and len(loser_err.strip().splitlines()) == 1, loser_err
    assert loser_err.startswith(
        f"tagger: error: --out {out} is being written by another tagger prepare "
        f"(pid {runs[winner].pid})"
    )
    assert "wrote" in results[winner][1]

    assert not partial_dir(out).exists() and not lock_path(out).exists()
    store = ClipStore(out)
    assert len(store.clip_ids) == 30
    for row, path in enumerate(store.source_paths):  # every clip is its own file's audio
        direct, _ = decode_clip(tmp_path / "audio" / path, 8000, store.clip_samples)
        np.testing.assert_array_equal(store.audio[row], direct, err_msg=path)


@pytest.mark.parametrize(
    ("failing_fsync", "committed"),
    [(1, False), (3, True), (8, True)],  # the first commit, the second, inside finish()
)
def test_a_full_disk_is_one_line_leaves_no_empty_file_and_resumes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    failing_fsync: int,
    committed: bool,
) -> None:
    write_many(tmp_path / "audio", 12)
    out = tmp_path / "store"
    argv = [*folder_args(tmp_path / "audio", out), "--workers", "1"]
    fsync, calls = os.fsync, []

    def full_disk(fd: int) -> None:
        calls.append(fd)
        if len(calls) == failing_fsync:  # where a full disk shows up: delayed allocation
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", full_disk)
    assert run_main(argv, monkeypatch) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bar
    assert error.startswith("tagger: error: ") and "No space left on device" in error
    assert f"--out {out}" in error and "free space, then run the same command again" in error
    assert not out.exists() and not lock_path(out).exists()
    assert partial_dir(out).exists() == committed  # with nothing committed, nothing is kept
    assert empty_files(tmp_path) == []

    monkeypatch.setattr(os, "fsync", fsync)
    assert run_main(argv, monkeypatch) == 0
    assert ("resuming the interrupted prepare" in capsys.readouterr().err) == committed
    resumed = ClipStore(out)
    assert run_main([*folder_args(tmp_path / "audio", tmp_path / "fresh"), "--workers", "1"],
                    monkeypatch) == 0  # fmt: skip
    np.testing.assert_array_equal(resumed.memmap(), ClipStore(tmp_path / "fresh").memmap())


@pytest.mark.parametrize("where", ["under a file", "/proc", "/sys"])
def test_an_impossible_out_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture, where: str
) -> None:
    write_many(tmp_path / "audio", 2)
    (tmp_path / "file.txt").write_text("a file")
    out = {
        "under a file": tmp_path / "file.txt" / "store",
        "/proc": Path("/proc/tagger-store"),
        "/sys": Path("/sys/tagger-store"),
    }[where]
    status = run_main([*folder_args(tmp_path / "audio", out), "--workers", "1"], monkeypatch)
    error = capsys.readouterr().err
    assert status != 0 and len(error.strip().splitlines()) == 1, error
    assert error.startswith("tagger: error: ") and str(out) in error
    assert "choose another --out" in error or "choose an --out in a directory" in error
    assert not lock_path(out).exists() and empty_files(tmp_path) == []


#: Holds the writer lock of the store argv[1], forks a decoding process (a process pool's
#: worker, as ``build_store`` does) that then sleeps, prints its pid and sleeps until killed.
LOCKED_WRITER = """
import os, sys, time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from tagger.prepare.writer import writer_lock
lock = writer_lock(Path(sys.argv[1]))
pool = ProcessPoolExecutor(1)
worker = pool.submit(os.getpid).result()  # forked holding the lock's descriptor
pool.submit(time.sleep, 60)
print(worker, flush=True)
time.sleep(60)
"""


def test_decoding_workers_do_not_hold_the_lock(tmp_path: Path) -> None:
    out = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    holder = subprocess.Popen([sys.executable, "-c", LOCKED_WRITER, str(out)], env=env,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    worker = int(holder.stdout.readline())
    try:
        assert worker != holder.pid
        with pytest.raises(LockBusyError, match=rf"\(pid {holder.pid}\)"):
            writer_lock(out)
        holder.kill()  # the writer lets go, as when it is killed
        holder.wait()
        assert alive(worker)
        again = writer_lock(out)  # the live worker does not keep it locked
        again.release()
        assert alive(worker)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(worker, signal.SIGKILL)
    first = writer_lock(tmp_path / "other")  # a second lock of one store, even in one process
    with pytest.raises(LockBusyError, match=rf"\(pid {os.getpid()}\)"):
        writer_lock(tmp_path / "other")
    first.release()


def test_the_lock_file_of_a_killed_writer_does_not_block(tmp_path: Path) -> None:
    lock_path(tmp_path / "store").write_text("4194303999\n")  # left by a writer killed -9
    lock = writer_lock(tmp_path / "store")
    assert lock_path(tmp_path / "store").read_text() == f"{os.getpid()}\n"
    lock.release()
    assert not lock_path(tmp_path / "store").exists()


#: ``tagger prepare`` whose decoding processes take 0.5 s a file (a module-level function
#: of ``__main__``, so that forked workers can be sent it), so that they are caught working.
SLOW_WORKERS_PREPARE = "\n".join([
    "import time",
    "from tagger.prepare import build",
    "decode = build.decode_or_reason",
    "def slow(*args):",
    "    time.sleep(0.5)",
    "    return decode(*args)",
    "build.decode_or_reason = slow",
    "from tagger.cli.prepare import main",
    "main()",
])  # fmt: skip


def children(pid: int) -> set[int]:
    """The live child processes of ``pid`` (Linux ``/proc``)."""
    found: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            found |= {int(child) for child in (task / "children").read_text().split()}
    return {child for child in found if alive(child)}


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="needs Linux /proc")
@pytest.mark.parametrize(
    ("signum", "status"),
    [(signal.SIGTERM, 143), (signal.SIGINT, 130), (signal.SIGKILL, -signal.SIGKILL)],
)
def test_decoding_workers_end_with_a_stopped_prepare(
    tmp_path: Path, signum: int, status: int
) -> None:
    write_many(tmp_path / "audio", 12)  # 3 s of decoding on two workers: stopped inside it
    out = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-c", SLOW_WORKERS_PREPARE, *folder_args(tmp_path / "audio", out)]
    process = subprocess.Popen(
        [*command, "--workers", "2"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,  # a signal to it alone, not to a group with its workers
    )  # fmt: skip
    deadline = time.time() + 60
    while len(workers := children(process.pid)) < 2 and time.time() < deadline:
        time.sleep(0.05)
    assert len(workers) >= 2, process.communicate(timeout=30)
    time.sleep(0.3)  # inside a decode
    os.kill(process.pid, signum)
    err = process.communicate(timeout=30)[1].decode()
    assert process.returncode == status, err
    if signum != signal.SIGKILL:
        assert "Traceback" not in err and "interrupted; run the same command" in err
    deadline = time.time() + 10
    while any(map(alive, workers)) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(map(alive, workers)), [pid for pid in workers if alive(pid)]
    assert not lock_path(out).exists() or signum == signal.SIGKILL
    assert subprocess.run([*command, "--workers", "2"], env=env, capture_output=True,
                          timeout=120).returncode == 0  # the same command resumes  # fmt: skip
    assert len(ClipStore(out).clip_ids) == 12
