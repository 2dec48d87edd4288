"""One logger interface for training metrics: metrics.jsonl always, TensorBoard and wandb when enabled."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class MetricsLogger:
    """Writes a row per optimizer step to ``output_dir/metrics.jsonl`` and mirrors it to the enabled sinks."""

    def __init__(self, output_dir: Path, *, tensorboard: bool = True, wandb: bool = False, config: Any = None) -> None:
        self.path = Path(output_dir) / "metrics.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("a", encoding="utf-8")
        self._tb = None
        self._wandb = None
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(log_dir=str(Path(output_dir) / "tb"))
            except ImportError:
                log.warning("TensorBoard is not installed (pip install tensorboard); logging to metrics.jsonl only")
        if wandb:
            import wandb as wandb_module  # a clear ImportError is the right message when asked for and missing

            self._wandb = wandb_module.init(config=config, dir=str(output_dir))

    def log(self, row: dict[str, Any]) -> None:
        step = int(row["step"])
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in row.items()}
        self._file.write(json.dumps(clean) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(key, value, step)
        if self._wandb is not None:
            self._wandb.log({k: v for k, v in row.items() if k != "step"}, step=step)

    def truncate_after(self, step: int) -> None:
        """Drop rows after ``step`` (a resumed run re-logs the steps after its checkpoint)."""
        self._file.close()
        rows = [line for line in self.path.read_text(encoding="utf-8").splitlines() if line.strip()]
        kept = [line for line in rows if json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
        self._file = self.path.open("a", encoding="utf-8")

    def close(self) -> None:
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
