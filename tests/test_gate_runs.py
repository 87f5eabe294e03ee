"""A run folder has one writer: a second training into a folder that a live training holds
is refused in one line and changes nothing there; the lock (``tagger.lock``) dies with its
process, forked children included, so a killed training never leaves a stale one; and a
training's DataLoader workers end with it, however it ends."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tagger.lock import LockBusyError, ProcessLock
from tests.conftest import REPO_ROOT, run_cli
from tests.test_faults import RUN

LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

#: Holds ProcessLock(argv[1]) (forking a child that sleeps, with argv[2] == "fork"), prints
#: "held <child pid or 0>" and sleeps until killed.
HOLDER = """
import os, sys, time
from pathlib import Path
from tagger.lock import ProcessLock
lock = ProcessLock(Path(sys.argv[1]), lambda holder: holder)
ready, started = os.pipe()
child = os.fork() if sys.argv[2] == "fork" else 0
if child == 0 and sys.argv[2] == "fork":
    os.write(started, b"x")  # os.fork has returned here: the fork hooks have run
    time.sleep(60)
    os._exit(0)
if child:
    os.read(ready, 1)
print("held", child, flush=True)
time.sleep(60)
"""


def busy(holder: str) -> str:
    return f"busy: {holder}"


def start_holder(path: Path, mode: str = "plain") -> tuple[subprocess.Popen, int]:
    """A process holding the lock on ``path``; with ``mode="fork"``, after forking a child
    (returned, else 0) that inherits it."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), mode], env=env,
                            stdout=subprocess.PIPE, text=True)  # fmt: skip
    word, child = proc.stdout.readline().split()
    assert word == "held"
    return proc, int(child)


def test_a_held_lock_is_refused_naming_its_holder_and_freed_by_sigkill(tmp_path: Path) -> None:
    path = tmp_path / ".train.lock"
    holder, _ = start_holder(path)
    try:
        with pytest.raises(LockBusyError, match=f"^busy: pid {holder.pid}$"):
            ProcessLock(path, busy)
    finally:
        holder.kill()
        holder.wait()
    with ProcessLock(path, busy):  # at once: no stale lock
        assert path.read_text() == f"{os.getpid()}\n"
    assert not path.exists()


def test_a_forked_child_does_not_keep_its_parents_lock(tmp_path: Path) -> None:
    """flock belongs to the open file, which a fork shares: the child (a DataLoader worker)
    closes its copy, so the lock ends with the process that took it."""
    path = tmp_path / ".train.lock"
    holder, child = start_holder(path, "fork")
    try:
        with pytest.raises(LockBusyError):
            ProcessLock(path, busy)
        holder.kill()
        holder.wait()
        os.kill(child, 0)  # the child lives on
        with ProcessLock(path, busy):
            pass
    finally:
        for pid in (holder.pid, child):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def test_the_lock_is_re_entrant_in_its_process_and_released_by_the_last_hold(
    tmp_path: Path,
) -> None:
    path = tmp_path / ".train.lock"
    outer = ProcessLock(path, busy)
    with ProcessLock(path, busy):  # the same process: counted, not refused
        pass
    assert path.exists()  # still held by the outer hold
    check = [sys.executable, "-c", "import sys; from pathlib import Path; "
             "from tagger.lock import ProcessLock; ProcessLock(Path(sys.argv[1]), str)",
             str(path)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    refused = subprocess.run(check, env=env, capture_output=True, text=True)
    assert f"LockBusyError: pid {os.getpid()}" in refused.stderr
    outer.release()
    outer.release()  # idempotent
    assert not path.exists()
    assert subprocess.run(check, env=env, capture_output=True).returncode == 0


#: Forks a child that sleeps (inside ``children_end_with_this_process`` with argv[1] ==
#: "inside"), prints its pid and sleeps until killed.
PARENT = """
import os, sys, time
from tagger.lock import children_end_with_this_process
with children_end_with_this_process() if sys.argv[1] == "inside" else open(os.devnull):
    child = os.fork()
    if child == 0:
        time.sleep(60)
        os._exit(0)
print(child, flush=True)
time.sleep(60)
"""


@LINUX
@pytest.mark.parametrize("where", ["inside", "outside"])
def test_children_forked_in_the_block_end_with_their_parent(where: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, where], env=env,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    child = int(parent.stdout.readline())
    try:
        parent.kill()
        parent.wait()
        time.sleep(0.5)
        ended = process_state(child) in (None, "Z")
        assert ended == (where == "inside")  # outside: an orphan, as before
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def start_training(args: list[str], cwd: Path) -> subprocess.Popen:
    """``python <args>`` in the background, as ``run_cli`` runs it; stderr piped."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HYDRA_FULL_ERROR": "0"}
    return subprocess.Popen(
        [sys.executable, *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


@pytest.mark.parametrize(("args", "fixed"), [
    (["seed=1", "hydra.run.dir=/runs/a"], "/runs/a"),
    (["hydra.run.dir=/runs/job=1,seed=2"], "/runs/job=1,seed=2"),  # quoted as Hydra needs
    (["hydra.run.dir=outputs/${now:%H}"], None),  # resolved by Hydra: a new folder
    (["-m", "hydra.run.dir=/runs/a", "seed=1,2"], None),  # a sweep's jobs have their own
    (["seed=1"], None),
])  # fmt: skip
def test_the_run_folder_a_command_line_fixes(args: list[str], fixed: str | None) -> None:
    """Taken by ``python train.py`` before Hydra writes its ``.hydra/`` snapshot into it."""
    from tagger.cli.train import fixed_run_dir

    assert fixed_run_dir(args) == (None if fixed is None else Path(fixed))


def wait_for(path: Path, proc: subprocess.Popen, seconds: float = 240) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert path.exists(), "the training never paused"


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (Hydra's ``.hydra/`` snapshot and log included) and its
    bytes."""
    return {str(p.relative_to(folder)): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}  # fmt: skip


@pytest.mark.slow
def test_a_second_training_into_a_held_run_folder_is_refused_in_one_line(tmp_path: Path) -> None:
    run_dir, paused, go = tmp_path / "first", tmp_path / "paused", tmp_path / "go"
    args = [str(REPO_ROOT / "train.py"), *RUN, f"hydra.run.dir={run_dir}", "ckpt_path=auto"]
    pause = ["+callbacks.pause._target_=tests.test_faults.PauseIn",
             "+callbacks.pause.stage=validate", "+callbacks.pause.batch=1",
             f"+callbacks.pause.marker={paused}", f"+callbacks.pause.go={go}"]  # fmt: skip
    first = start_training([*args, *pause], tmp_path)
    try:
        wait_for(paused, first)  # in epoch 0's validation, with step 10's last.ckpt saved
        before = files_of(run_dir)
        assert {"checkpoints/last.ckpt", ".hydra/config.yaml", "train.log"} <= set(before)

        second = run_cli(*args, cwd=tmp_path)  # the same command again
        assert second.returncode == 2, second.stderr[-2000:]
        assert second.stderr.strip().splitlines() == [
            f"tagger: error: run folder {run_dir} is in use by another training "
            f"(pid {first.pid}); wait for it to end, or stop it and run this command again "
            "to resume it, or give this run its own hydra.run.dir"
        ]
        # resuming from its checkpoint into another run folder: its checkpoints are held too
        last = run_dir / "checkpoints" / "last.ckpt"
        third = run_cli(str(REPO_ROOT / "train.py"), *RUN, f"hydra.run.dir={tmp_path / 'other'}",
                        f"ckpt_path={last}", cwd=tmp_path)  # fmt: skip
        assert third.returncode == 2, third.stderr[-2000:]
        (line,) = third.stderr.strip().splitlines()
        assert line.startswith(
            f"tagger: error: checkpoint folder {run_dir / 'checkpoints'} is in use by another "
            f"training (pid {first.pid})"
        )
        assert files_of(run_dir) == before  # nothing written, nothing removed
    finally:
        go.touch()
        _, stderr = first.communicate(timeout=240)
    assert first.returncode == 0, stderr[-2000:]
    assert not (run_dir / ".train.lock").exists()


def process_state(pid: int) -> str | None:
    """The state letter of ``pid`` in /proc (``Z``: ended, not yet reaped), None if gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except FileNotFoundError:
        return None


def children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


@LINUX
@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_stopped_or_killed_training_leaves_no_dataloader_worker(
    tmp_path: Path, signum: signal.Signals
) -> None:
    """Workers used to outlive a killed training by seconds (until they noticed); now the
    OS ends them with it. The folder is free at once for the resumed run."""
    run_dir, paused = tmp_path / "run", tmp_path / "paused"
    args = [str(REPO_ROOT / "train.py"), *RUN, "data.num_workers=2", f"hydra.run.dir={run_dir}",
            "ckpt_path=auto"]  # fmt: skip
    pause = ["+callbacks.pause._target_=tests.test_faults.PauseAt", "+callbacks.pause.step=3",
             f"+callbacks.pause.marker={paused}"]  # fmt: skip
    proc = start_training([*args, *pause], tmp_path)
    wait_for(paused, proc)
    workers = children(proc.pid)
    assert len(workers) >= 2  # training loader's (and the sanity check's validation ones)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode in (128 + signum, -signum), stderr[-2000:]
    time.sleep(0.5)  # the OS's signal, not the workers' own check every 5 s
    states = {pid: process_state(pid) for pid in workers}
    assert set(states.values()) <= {None, "Z"}, states  # gone, or dead and not yet reaped
    resumed = run_cli(*args, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
