"""Which model answers a task by default (a request's ``"task": "derm"``), kept in the store.

The file lives at the model store's root, beside the model folders, and is read on every request
that names a task: ``medrobust models default derm derm:production`` (or ``medrobust
quickstart``) takes effect in a running API at once, with no restart. Its name starts with ``_``,
which no model name can (``training.model_ref.NAME_PATTERN``), so it is never taken for a model.

``MEDROBUST_DEFAULT_MODELS`` (the service's settings) still wins for the tasks it names: an
operator's explicit configuration is not overridden by a file anyone with store access can write.
"""

from __future__ import annotations

import json
from pathlib import Path

from training.model_ref import NAME_PATTERN, ModelRef

TASKS_FILE = "_tasks.json"


class TaskDefaultsError(ValueError):
    """A task name or model ref that cannot be stored."""


def read_task_defaults(store_root: Path) -> dict[str, str]:
    """task → model ref, as stored under ``store_root`` (empty when none was set)."""
    path = Path(store_root) / TASKS_FILE
    if not path.is_file():
        return {}
    stored = json.loads(path.read_text())
    return {str(task): str(ref) for task, ref in stored.items()}


def set_task_default(store_root: Path, task: str, ref: str) -> None:
    """Make ``ref`` (``NAME[:VERSION|ALIAS]``) the default model of ``task``; atomic on disk."""
    if not NAME_PATTERN.match(task):
        raise TaskDefaultsError(f"task {task!r} must match {NAME_PATTERN.pattern}")
    ModelRef.parse(ref)  # a ModelRefError (a ValueError) for a ref no store could hold
    root = Path(store_root)
    root.mkdir(parents=True, exist_ok=True)
    defaults = {**read_task_defaults(root), task: ref}
    path = root / TASKS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(defaults, indent=1, sort_keys=True))
    tmp.replace(path)
