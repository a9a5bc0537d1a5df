"""The training log: one JSON object a line beside the checkpoint (any plotting tool reads it), and TensorBoard
scalars too when `tensorboard` happens to be installed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def metrics_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.stem + ".metrics.jsonl")


class MetricsLog:
    """Appends records and flushes each one, so a run killed at any point leaves every finished line readable."""

    def __init__(self, path: Path, resume_after_step: int | None = None) -> None:
        self.path = path
        self.records: list[dict[str, Any]] = []
        if resume_after_step is not None and path.is_file():  # continue the interrupted run's log
            self.records = [r for r in read_metrics(path) if r.get("step", 0) <= resume_after_step]
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as handle:
            handle.writelines(json.dumps(r) + "\n" for r in self.records)
        self._handle = path.open("a", encoding="utf-8")
        self._board = _tensorboard(path.with_name(path.stem + ".tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self._handle.write(json.dumps(record) + "\n")
        self._handle.flush()
        if self._board is not None:
            for name, value in _scalars(record, record.get("event", "train")):
                self._board.add_scalar(name, value, record["step"])

    def close(self) -> None:
        self._handle.close()
        if self._board is not None:
            self._board.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a log; a line cut short by a crash is skipped."""
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            continue
    return records


def _scalars(record: dict[str, Any], prefix: str):
    """(name, number) for TensorBoard: nested keys joined with '/', under the record's event."""
    for key, value in record.items():
        if isinstance(value, dict):
            yield from _scalars(value, f"{prefix}/{key}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and key not in ("step", "epoch"):
            yield f"{prefix}/{key}", value


def _tensorboard(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # optional: the JSON lines are the log
        return None
    return SummaryWriter(str(folder))
