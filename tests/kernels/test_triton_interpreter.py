"""The Triton kernels, run on CPU tensors by Triton's interpreter (TRITON_INTERPRET=1), equal the reference.

Triton reads TRITON_INTERPRET when a kernel is decorated, including its own ``tl.zeros``-style helpers at
``import triton``, and in a pytest session something (TRL, Liger) may already have imported triton without
it. So the cases live in ``triton_interpreter_cases.py`` and run here in a fresh Python process with the
variable set. Sizes are tiny: the interpreter executes every program in Python (a few seconds in all).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CASES = Path(__file__).with_name("triton_interpreter_cases.py")


def test_triton_kernels_in_the_interpreter():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    cmd = [sys.executable, "-m", "pytest", str(CASES), "-q", "-p", "no:cacheprovider", "-rs"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-8000:] + proc.stderr[-2000:]
    assert " passed" in proc.stdout and "skipped" not in proc.stdout, proc.stdout[-2000:]
