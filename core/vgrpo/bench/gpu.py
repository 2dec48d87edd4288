"""``python -m vgrpo.bench gpu``: the one-command GPU acceptance report (``--tiny``: the same harness on CPU).

Sections run in order of value, each in its own process with its own time limit (a share of ``--budget-s``):

1. ``kernels`` (:mod:`vgrpo.bench.gpu_kernels`): per-token log-probs and the fused GRPO loss, forward + backward,
   Triton vs the chunked PyTorch path vs naive vs Liger, bf16 and fp32: error against an fp32 reference, time,
   peak memory, fraction of the bf16 matmul rate measured in the same run.
2. ``engine`` (:mod:`vgrpo.bench.gpu_engine`): GRPO optimizer steps of a random-weight Qwen2.5-VL-3B built in
   code, with the time of each phase, completion tokens/s, peak memory, fused vs naive log-probs, gradient
   checkpointing on and off.
3. ``trl`` (:mod:`vgrpo.bench.gpu_trl`): TRL's GRPOTrainer on the engine's model and data, side by side with the
   engine's first variant (seconds per step, completion tokens/s, peak memory and their ratios); skipped with a
   line when TRL is not installed.

A section's process writes its result file after every measurement, so a section killed at its time limit still
reports what it measured, marked ``timeout`` with its sizes; one that runs out of memory is reported as such and
the next section runs. ``DIR/report.json`` and ``DIR/report.md`` hold the device, driver, library versions and
every check's pass/fail with its figures; the command prints the markdown and exits 0 when every check that ran
passed (1 otherwise; 2 without CUDA and without ``--tiny``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Sections in order of value, with their share of the budget.
SECTIONS = {"kernels": 0.4, "engine": 0.45, "trl": 0.15}
#: Optional libraries the report looks for (import name, what it is for).
OPTIONAL = {
    "liger_kernel": "Liger-Kernel (kernel comparison)",
    "trl": "TRL (GRPOTrainer side by side)",
    "deepspeed": "DeepSpeed (ZeRO configs)",
    "vllm": "vLLM (generation backend)",
    "flash_attn": "flash-attn (attn_implementation=flash_attention_2)",
}
#: Seconds a section's process gets past its limit to write its result before it is killed.
GRACE_S = 20.0
NO_CUDA = (
    "python -m vgrpo.bench gpu: no CUDA device (torch.cuda.is_available() is False); "
    "run it on a GPU machine, or pass --tiny for the CPU-sized check"
)


@dataclass
class Check:
    """One pass/fail line: ``passed`` None means reported, not judged (e.g. speed targets at tiny size)."""

    name: str
    passed: bool | None
    value: str
    """The figures behind the verdict, as the report prints them."""


@dataclass
class SectionResult:
    """What one section measured: its rows (one per measurement), its checks and how it ended."""

    name: str
    status: str = "running"
    """ok | timeout | out of memory | error | skipped."""
    limit_s: float = 0.0
    seconds: float = 0.0
    sizes: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    """Lines for what was skipped or not available, and why."""
    error: str | None = None

    def save(self, path: Path) -> None:
        """Write atomically, so a killed process leaves the previous complete version."""
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2, default=str), encoding="utf-8")
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> SectionResult:
        doc = json.loads(path.read_text(encoding="utf-8"))
        doc["checks"] = [Check(**c) for c in doc.get("checks", [])]
        return cls(**doc)


@dataclass
class SectionContext:
    """What a section's code is given: sizes mode, its deadline, where to save progress."""

    tiny: bool
    device: str
    deadline: float
    """``time.monotonic()`` by which the section should stop starting new measurements."""
    result: SectionResult
    path: Path

    def left_s(self) -> float:
        return self.deadline - time.monotonic()

    def save(self) -> None:
        self.result.save(self.path)


# ---------------------------------------------------------------------------------------------------------------
# Environment


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "missing"


def _importable(name: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def environment(tiny: bool) -> dict[str, Any]:
    """Device, driver and library versions; which optional libraries are importable."""
    import torch

    env: dict[str, Any] = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "mode": "tiny" if tiny else "full",
        "python": platform.python_version(),
        "platform": f"{platform.system()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "cuda_runtime": torch.version.cuda,
        "triton": _version("triton"),
        "transformers": _version("transformers"),
        "vgrpo": _version("vgrpo"),
    }
    if torch.cuda.is_available():
        smi = _nvidia_smi("name,memory.total,driver_version")  # keeps this process without a CUDA context
        if smi:
            name, memory, env["driver"] = smi
            env["device"] = f"{name}, {memory}"
        else:
            props = torch.cuda.get_device_properties(0)
            env["device"] = f"{props.name}, {props.total_memory / 2**30:.0f} GiB"
            env["driver"] = "unknown (no nvidia-smi)"
    else:
        env["device"] = f"CPU only ({platform.processor() or platform.machine()})"
        env["driver"] = "none"
    env["optional"] = {
        name: _version(name.replace("_", "-")) if _importable(name) else None for name in OPTIONAL
    }
    return env


def _nvidia_smi(fields: str) -> list[str] | None:
    """The first GPU's ``fields`` from ``nvidia-smi``, or None where it cannot be run."""
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    lines = out.stdout.strip().splitlines()
    return [v.strip() for v in lines[0].split(",")] if out.returncode == 0 and lines else None


# ---------------------------------------------------------------------------------------------------------------
# Running the sections


def _section_env(tiny: bool) -> dict[str, str]:
    env = dict(os.environ)
    if tiny:
        import torch

        if not torch.cuda.is_available():  # Triton on CPU tensors: only through its interpreter
            env["TRITON_INTERPRET"] = "1"
    return env


def run_section(name: str, out: Path, limit_s: float, tiny: bool) -> SectionResult:
    """Run section ``name`` in its own process under ``limit_s``; its result, also when it was killed."""
    path = out / f"{name}.json"
    path.unlink(missing_ok=True)
    log_path = out / f"{name}.log"
    cmd = [sys.executable, "-m", "vgrpo.bench", "gpu", "--section", name, "--out", str(out)]
    cmd += ["--section-limit-s", f"{limit_s:.1f}"] + (["--tiny"] if tiny else [])
    start = time.monotonic()
    status, error = None, None
    with open(log_path, "w", encoding="utf-8") as logf:
        proc = subprocess.Popen(
            cmd, stdout=logf, stderr=subprocess.STDOUT, env=_section_env(tiny), start_new_session=True
        )
        try:
            rc = proc.wait(timeout=limit_s + GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            rc, status = None, "timeout"
            error = f"killed at its time limit ({limit_s:.0f} s + {GRACE_S:.0f} s grace)"
    seconds = time.monotonic() - start
    if path.exists():
        result = SectionResult.load(path)
    else:
        result = SectionResult(name, sizes={}, limit_s=limit_s)
    if status is not None:
        result.status, result.error = status, error
    elif rc != 0 and result.status in ("running", "ok"):
        lines = [
            ln for ln in log_path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()
        ]
        result.status = "error"
        result.error = (lines[-1] if lines else f"exit status {rc}") + f" (see {log_path.name})"
    elif result.status == "running":
        result.status = "error"
        result.error = f"the section's process ended without finishing (exit status {rc})"
    result.seconds = round(seconds, 1)
    result.limit_s = round(limit_s, 1)
    return result


def section_main(name: str, out: Path, limit_s: float, tiny: bool) -> int:
    """In a section's own process: run it, saving progress; an out-of-memory or error ends it, reported."""
    import torch

    from vgrpo.bench import gpu_engine, gpu_kernels, gpu_trl

    device = "cuda" if torch.cuda.is_available() else "cpu"
    ctx = SectionContext(
        tiny, device, time.monotonic() + limit_s, SectionResult(name, limit_s=limit_s), out / f"{name}.json"
    )
    run = {"kernels": gpu_kernels.run, "engine": gpu_engine.run, "trl": gpu_trl.run}[name]
    try:
        run(ctx)
        if ctx.result.status == "running":  # a section may have said "skipped"
            ctx.result.status = "ok"
    except torch.OutOfMemoryError as exc:
        ctx.result.status = "out of memory"
        ctx.result.error = f"{str(exc).splitlines()[0]} at sizes {ctx.result.sizes}"
    except Exception as exc:  # reported in the report; the next section still runs
        log.exception("section %s failed", name)
        ctx.result.status = "error"
        ctx.result.error = f"{type(exc).__name__}: {exc}"
    ctx.save()
    return 0


def run_all(out: Path, budget_s: float, tiny: bool) -> dict[str, Any]:
    """Every section in order, each under its share of the budget (time a section leaves unused goes on)."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    report: dict[str, Any] = {"environment": environment(tiny), "budget_s": budget_s, "sections": []}
    shares = dict(SECTIONS)
    for i, name in enumerate(SECTIONS):
        left = budget_s - (time.monotonic() - start)
        rest = sum(shares[n] for n in list(SECTIONS)[i:])
        limit = max(10.0, left * shares[name] / rest - (GRACE_S if i < len(SECTIONS) - 1 else 0))
        log.info("section %s: limit %.0f s", name, limit)
        result = run_section(name, out, limit, tiny)
        report["sections"].append(asdict(result))
    report["seconds"] = round(time.monotonic() - start, 1)
    report["passed"] = passed(report)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    (out / "report.md").write_text(markdown(report), encoding="utf-8")
    return report


def passed(report: dict[str, Any]) -> bool:
    """Every judged check passed and every section finished (a timeout or an error is a failure)."""
    for s in report["sections"]:
        if s["status"] not in ("ok", "skipped"):
            return False
        if any(c["passed"] is False for c in s["checks"]):
            return False
    return True


# ---------------------------------------------------------------------------------------------------------------
# The report


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
    if v is None:
        return ""
    return str(v).replace("|", "/")


def markdown(report: dict[str, Any]) -> str:
    """The report as markdown: environment, then per section its status, checks, table and notes."""
    env = report["environment"]
    lines = [f"# vgrpo GPU acceptance report ({env['mode']})", ""]
    lines += [f"- date: {env['date']}", f"- device: {env['device']}", f"- driver: {env['driver']}"]
    lines += [
        f"- torch {env['torch']} (CUDA runtime {env['cuda_runtime']}), triton {env['triton']}, "
        f"transformers {env['transformers']}, vgrpo {env['vgrpo']}, Python {env['python']}"
    ]
    for name, what in OPTIONAL.items():
        ver = env["optional"].get(name)
        lines.append(f"- {what}: {ver}" if ver else f"- {what}: not installed, skipped")
    verdict = "PASS" if report["passed"] else "FAIL"
    lines += ["", f"**{verdict}** in {report['seconds']:.0f} s of a {report['budget_s']:.0f} s budget", ""]
    for s in report["sections"]:
        lines += [f"## {s['name']}: {s['status']} ({s['seconds']:.0f} s of {s['limit_s']:.0f} s)", ""]
        if s.get("error"):
            lines += [f"- {s['status']}: {s['error']}"]
        if s.get("sizes"):
            lines += ["- sizes: " + ", ".join(f"{k}={_cell(v)}" for k, v in s["sizes"].items())]
        for c in s["checks"]:
            mark = {True: "pass", False: "**FAIL**", None: "info"}[c["passed"]]
            lines.append(f"- [{mark}] {c['name']}: {c['value']}")
        for note in s["notes"]:
            lines.append(f"- {note}")
        rows = s["rows"]
        if rows:
            cols = list(dict.fromkeys(k for r in rows for k in r if not isinstance(r[k], (list, dict))))
            lines += ["", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            lines += ["| " + " | ".join(_cell(r.get(c)) for c in cols) + " |" for r in rows]
        lines.append("")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# CLI


def run(args: argparse.Namespace) -> int:
    import torch

    out = Path(args.out)
    if args.section:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
        return section_main(args.section, out, args.section_limit_s, args.tiny)
    if not args.tiny and not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    report = run_all(out, args.budget_s, args.tiny)
    print((out / "report.md").read_text(encoding="utf-8"))
    print(f"report: {out / 'report.json'}, {out / 'report.md'}", file=sys.stderr)
    return 0 if report["passed"] else 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="gpu-report", help="folder for report.json, report.md and logs")
    parser.add_argument(
        "--budget-s", type=float, default=400.0, help="seconds for all sections together (default 400)"
    )
    parser.add_argument(
        "--tiny", action="store_true", help="tiny sizes; runs on CPU (Triton via its interpreter)"
    )
    parser.add_argument(
        "--section", choices=tuple(SECTIONS), help=argparse.SUPPRESS
    )  # a section's own process
    parser.add_argument("--section-limit-s", type=float, default=60.0, help=argparse.SUPPRESS)
    parser.set_defaults(run=run)
