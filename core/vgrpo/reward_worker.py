"""The reward worker process: scores batches for the trainer (see :mod:`vgrpo.reward_pool`).

Started as ``python -m vgrpo.reward_worker IN_FD OUT_FD``; it loads the installed plugins itself (the
weighted plugin rewards of a request are looked up in its own registry: Reward objects are not sent), answers
("ready", pid), then one reply per request, ``("ok", scores, failures)`` or ``("error", message, failures)``,
until its inbox closes. It exits when its parent dies; it ignores SIGINT and runs in its own process group, which
the trainer kills as a whole when a call times out.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections import Counter
from multiprocessing.connection import Connection
from typing import Any


def exit_with_parent(parent: int) -> None:
    """Exit when the parent dies (checked each second; a running C-level call delays it to its end)."""

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=watch, name="vgrpo-reward-parent-watch", daemon=True).start()


def serve(inbox: Connection, outbox: Connection) -> None:
    from vgrpo.plugins import get_registry
    from vgrpo.scoring import score

    registry = get_registry()
    outbox.send(("ready", os.getpid()))
    while True:
        try:
            request: dict[str, Any] = inbox.recv()
        except (EOFError, OSError):
            return
        failures: Counter[str] = Counter()
        try:
            task = registry.task(request["task"])
            results = score(
                task,
                request["completions"],
                request["samples"],
                request["params"],
                request["weights"],
                plugin_rewards=registry.rewards,
                failures=failures,
            )
            outbox.send(("ok", results, failures))
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which scores the minimum
            outbox.send(("error", f"{type(exc).__name__}: {exc}", failures))


def main(argv: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the trainer decides when a run stops, and ends this worker
    os.dup2(
        2, 1
    )  # what plugin code prints (C extensions too) goes to stderr: the parent's stdout stays its own
    inbox, outbox = Connection(int(argv[1]), writable=False), Connection(int(argv[2]), readable=False)
    exit_with_parent(os.getppid())
    serve(inbox, outbox)


if __name__ == "__main__":
    main(sys.argv)
