"""``python -m vgrpo.bench <benchmark> [options]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vgrpo.bench", description="vgrpo benchmarks")
    sub = parser.add_subparsers(dest="bench", metavar="BENCHMARK", required=True)
    from vgrpo.bench import gpu, logprobs, rewards, rollout, step

    rewards.add_arguments(
        sub.add_parser("rewards", help="completions scored per second, per task, on one core")
    )
    logprobs.add_arguments(
        sub.add_parser("logprobs", help="per-token log-probs + GRPO loss: fwd+bwd time, peak memory")
    )
    step.add_arguments(
        sub.add_parser("step", help="one GRPO optimizer step, vgrpo vs TRL's GRPOTrainer: time, peak memory")
    )
    rollout.add_arguments(
        sub.add_parser(
            "rollout", help="rollout tokens/s and whole-step time on each generation backend (hf, vllm)"
        )
    )
    gpu.add_arguments(
        sub.add_parser(
            "gpu", help="the GPU acceptance report: kernels and a real-size GRPO step (--tiny: on CPU)"
        )
    )
    args = parser.parse_args(argv)
    return int(args.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
