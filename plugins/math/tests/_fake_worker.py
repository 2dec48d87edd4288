"""A stand-in verification worker for deterministic tests: speaks the real protocol, fakes the maths.

A prediction containing ``sleep`` hangs, ``crash`` kills the process, ``raise`` raises; a ground truth
containing ``slowgold`` hangs while "parsing". Otherwise the verdict is string equality.
"""

from __future__ import annotations

import os
import sys
import time

from vgrpo_math import _worker


class FakeCheck:
    def gold(self, text: str) -> str:
        if "slowgold" in text:
            time.sleep(60)
        return text

    def verify(self, gold: str, pred: str) -> bool:
        if "sleep" in pred:
            time.sleep(60)
        if "crash" in pred:
            os._exit(3)
        if "raise" in pred:
            raise RecursionError("maximum recursion depth exceeded")
        return gold == pred


if __name__ == "__main__":
    inbox, outbox = _worker.connect(sys.argv)
    _worker.serve(FakeCheck(), inbox, outbox)
