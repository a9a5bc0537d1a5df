"""The training log: one JSON object a line beside the checkpoint (any plotting tool reads it), and TensorBoard
scalars too when `tensorboard` happens to be installed."""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import Any


def metrics_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.stem + ".metrics.jsonl")


class MetricsLog:
    """Appends records and flushes each one, so a run killed at any point leaves every finished line readable.

    Runs written to one checkpoint path follow each other in its log, each opened by a "run" record: a new run
    that is killed early must not cost the log of the checkpoint still in place. A resumed run continues the
    interrupted run's records."""

    def __init__(self, path: Path, resume_after_step: int | None = None) -> None:
        self.path = path
        earlier = _read_lines(path) if path.is_file() else []
        start = _last_run_start(earlier)
        if resume_after_step is not None:  # continue the interrupted run's log
            self.records = [r for r in earlier[start:] if r.get("step", 0) <= resume_after_step]
            earlier = earlier[:start]
        else:
            self.records = [{"event": "run", "step": 0, "started": time.time()}]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(r) + "\n" for r in [*earlier, *self.records])
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
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
    """The records of the log's last run (see MetricsLog); a line cut short by a crash is skipped."""
    records = _read_lines(path)
    return records[_last_run_start(records):]


def _read_lines(path: Path) -> list[dict[str, Any]]:
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _last_run_start(records: list[dict[str, Any]]) -> int:
    return max((i for i, r in enumerate(records) if r.get("event") == "run"), default=0)


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
