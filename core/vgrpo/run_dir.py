"""A run's ``output_dir``: owned by one run at a time, and never a mix of two runs' files.

* A lock file (``.vgrpo.lock``: pid, host, start time) refuses a second run on the same folder with a message
  naming the first; a lock left by a process that is gone (same host) is taken over with a warning.
* A new run (``resume=never``, or ``auto`` with no intact checkpoint) into a folder that holds another run's
  checkpoints or metrics refuses — unless ``checkpoint.overwrite=true`` (or, with ``auto``, when nothing could be
  resumed) — and then moves the old files aside to ``previous-runs/<time>/``: nothing is ever deleted.
* A resumed run cuts metrics.jsonl and completions.jsonl back to the step it resumes from, so no step is logged
  twice (a line cut by a kill is dropped).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from pathlib import Path

from vgrpo.checkpoint import checkpoints
from vgrpo.data import jsonl_lines
from vgrpo.errors import TrainingError

log = logging.getLogger(__name__)

LOCK = ".vgrpo.lock"
PREVIOUS = "previous-runs"
#: What a run writes at the top of its output_dir (besides checkpoint-<step>/ folders).
RUN_FILES = ("metrics.jsonl", "completions.jsonl", "config.yaml", "tb", "eval", "plot.png")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class RunLock:
    """The lock that makes a run the only one writing to its output_dir."""

    def __init__(self, output_dir: Path) -> None:
        self.path = Path(output_dir) / LOCK
        self.held = False

    def acquire(self) -> None:
        """Take the lock; a :class:`TrainingError` naming the run that holds it when it is alive, or saying that
        output_dir cannot be written."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            probe = self.path.parent / f".vgrpo-write-test-{os.getpid()}"
            probe.write_text("")
            probe.unlink()
        except OSError as exc:
            raise TrainingError(
                f"output_dir {self.path.parent} cannot be written ({exc.strerror or exc}): choose "
                "another output_dir or fix its permissions"
            ) from None
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale(me["host"])
                continue
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(me, f)
            self.held = True
            return
        raise TrainingError(f"{self.path}: could not take the run lock")

    def _take_over_if_stale(self, host: str) -> None:
        try:
            other = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            other = {}
        pid, other_host = other.get("pid"), other.get("host")
        if isinstance(pid, int) and other_host == host and (pid == os.getpid() or not _alive(pid)):
            if pid == os.getpid():  # this process's own lock, from a run object that was not cleaned up
                self.path.unlink(missing_ok=True)
                return
            log.warning(
                "%s: the run that held this output_dir (pid %d, started %s) is gone; taking it over",
                self.path.parent,
                pid,
                other.get("started", "?"),
            )
            self.path.unlink(missing_ok=True)
            return
        if not other:
            raise TrainingError(
                f"{self.path}: an unreadable run lock; if no run uses {self.path.parent}, delete it"
            )
        raise TrainingError(
            f"{self.path.parent} is in use by another run (pid {pid} on {other_host}, started "
            f"{other.get('started', '?')}): wait for it, stop it, or set output_dir to another folder"
            + (f"; if that run is gone, delete {self.path}" if other_host != host else "")
        )

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def previous_run_files(output_dir: Path) -> list[Path]:
    """The checkpoints and run files of an earlier run in ``output_dir``."""
    found = [p for _, p in checkpoints(output_dir)] + [
        output_dir / n for n in RUN_FILES if (output_dir / n).exists()
    ]
    found += sorted(output_dir.glob("eval-*"))  # evaluations under a protocol (vgrpo eval --protocol)
    if all(
        p.name == "config.yaml" for p in found
    ):  # a config alone is no run (a run that failed at start-up)
        return []
    return found


def move_aside(output_dir: Path, files: list[Path]) -> Path:
    """Move an earlier run's files to ``previous-runs/<time>/`` (never deleted); returns that folder."""
    target = output_dir / PREVIOUS / time.strftime("%Y%m%d-%H%M%S")
    n = 1
    while target.exists():
        n += 1
        target = target.with_name(f"{target.name.split('.')[0]}.{n}")
    target.mkdir(parents=True)
    for path in files:
        path.rename(target / path.name)
    log.warning("%s held an earlier run; its files are now in %s", output_dir, target)
    return target


def start_fresh(output_dir: Path, *, resume: str, overwrite: bool) -> None:
    """Before a run that resumes nothing: refuse, or move an earlier run's files aside (see the module)."""
    files = previous_run_files(output_dir)
    if not files:
        return
    if resume == "never" and not overwrite:
        names = ", ".join(p.name for p in files[:6]) + (", ..." if len(files) > 6 else "")
        raise TrainingError(
            f"{output_dir} already holds a run ({names}) and checkpoint.resume=never starts a new one: set "
            "checkpoint.resume=auto to continue it, checkpoint.overwrite=true to move it aside to "
            f"{PREVIOUS}/, or another output_dir"
        )
    move_aside(output_dir, files)


def set_aside_for_resume(output_dir: Path, checkpoint: Path) -> None:
    """Before resuming ``checkpoint`` into ``output_dir``: what would mix with the resumed run moves aside — the
    whole earlier run when the checkpoint comes from another folder, else the checkpoints after it (a branch
    the resume abandons)."""
    from vgrpo.checkpoint import checkpoints

    output_dir, checkpoint = Path(output_dir), Path(checkpoint)
    if checkpoint.resolve().parent != output_dir.resolve():
        files = previous_run_files(output_dir)
    else:
        step = (
            int(checkpoint.name.rsplit("-", 1)[-1]) if checkpoint.name.rsplit("-", 1)[-1].isdigit() else None
        )
        files = [p for n, p in checkpoints(output_dir) if step is not None and n > step]
    if files:
        move_aside(output_dir, files)


def truncate_jsonl(path: Path, step: int) -> None:
    """Keep the rows of ``path`` up to ``step`` (a row without a step, or a line cut by a kill, is dropped)."""
    if not path.exists():
        return
    kept = []
    for line in jsonl_lines(path.read_text(encoding="utf-8", errors="replace")):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            kept.append(line)
    tmp = path.with_name(f".{path.name}.tmp")  # a kill while rewriting leaves the old file whole
    tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
    os.replace(tmp, path)
