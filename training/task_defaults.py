"""Which model answers a task by default (a request's ``"task": "derm"``), kept in the store.

The file lives at the model store's root, beside the model folders, and is read on every request
that names a task: ``medrobust models default derm derm:production`` (or ``medrobust
quickstart``) takes effect in a running API at once, with no restart. Its name starts with ``_``,
which no model name can (``training.model_ref.NAME_PATTERN``), so it is never taken for a model.

``MEDROBUST_DEFAULT_MODELS`` (the service's settings) still wins for the tasks it names: an
operator's explicit configuration is not overridden by a file anyone with store access can write.

Anyone with store access can also break the file (a hand edit, a full disk). Reading it then
raises :class:`TaskDefaultsFileError`, naming the file and the fix, rather than a bare JSON error
or a half-read mapping: the file is the only record of the defaults, so it is never silently
ignored nor overwritten.
"""

from __future__ import annotations

import json
from pathlib import Path

from training.model_ref import NAME_PATTERN, ModelRef, ModelRefError

TASKS_FILE = "_tasks.json"
#: how to repair an unreadable file, in every message about one
REPAIR = "fix it, or delete it and set each default again with `medrobust models default TASK REF`"


class TaskDefaultsError(ValueError):
    """A task name or model ref that cannot be stored."""


class TaskDefaultsFileError(TaskDefaultsError):
    """The store's task defaults file exists but holds no readable defaults: unreadable bytes,
    not JSON, or not an object of task name -> model ref as :func:`set_task_default` writes it.

    ``problem`` says what is wrong without the file's path, for messages that must not show
    where the server keeps its files; ``str()`` names the path and the fix (the CLI's line)."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"the task defaults file {path} is unreadable ({problem}): {REPAIR}")
        self.path = path
        self.problem = problem


def _checked(path: Path, stored: object) -> dict[str, str]:
    """``stored`` if it is what :func:`set_task_default` writes, else the reason it is not."""
    if not isinstance(stored, dict):
        raise TaskDefaultsFileError(path, f"a JSON {type(stored).__name__}, not an object")
    for task, ref in stored.items():
        if not NAME_PATTERN.match(task):
            raise TaskDefaultsFileError(path, f"task {task!r} is not a valid name")
        if not isinstance(ref, str):
            raise TaskDefaultsFileError(path, f"task {task!r} maps to {ref!r}, not a model ref")
        try:
            ModelRef.parse(ref)
        except ModelRefError as exc:
            raise TaskDefaultsFileError(path, f"task {task!r}: {exc}") from None
    return stored


def read_task_defaults(store_root: Path) -> dict[str, str]:
    """task → model ref, as stored under ``store_root`` (empty when none was set); a file that
    is there but unreadable raises :class:`TaskDefaultsFileError`."""
    path = Path(store_root) / TASKS_FILE
    if not path.is_file():
        return {}
    try:
        stored = json.loads(path.read_bytes())
    except OSError as exc:
        raise TaskDefaultsFileError(path, exc.strerror or type(exc).__name__) from None
    except ValueError as exc:  # json.JSONDecodeError, UnicodeDecodeError
        raise TaskDefaultsFileError(path, f"not JSON: {exc}") from None
    return _checked(path, stored)


def set_task_default(store_root: Path, task: str, ref: str) -> None:
    """Make ``ref`` (``NAME[:VERSION|ALIAS]``) the default model of ``task``; atomic on disk.
    An unreadable file is left as it is (:class:`TaskDefaultsFileError`): rewriting it would
    drop the other tasks' defaults it may still hold."""
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
