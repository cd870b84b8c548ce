"""Which server files a job request may name, and how server paths appear in answers.

A job spec names files (a dataset folder or ``.npz``, a groups CSV, backbone weights). A caller
with the ``jobs`` scope must not be able to make the service read, or learn about, anything else
on the machine, so every such path is *confined*: resolved with symlinks followed and accepted
only if the real path lies inside one of the configured roots (``MEDROBUST_DATA_ROOTS``, default
the data dir; ``MEDROBUST_WEIGHTS_DIR`` and the model store for weights). A refusal reads the same
whether or not the path exists, so a 422 tells the caller nothing about the file system outside
the roots; existence is checked only after confinement passed.

The API confines on submission; the worker confines again, because it takes the spec from the
job database, and hands ``training/`` the resolved absolute paths, so what was checked is what is
read. ``training/`` itself stays unconfined: the CLI is a trusted local user.

:meth:`PathPolicy.redact` turns server paths in messages into ``<data>/relative`` form (``<path>``
outside every known root), so answers never show where the service keeps its files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.config import Settings
from training.data.registry import DEFAULT_DATA_DIR, DatasetSpec

#: an absolute path inside a message: a ``/`` not preceded by a path or word character, nor by
#: the ``>`` of a label this module put there (``<data>/x``)
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~/\\>-])/[^\s'\"`,;:()\[\]{}<>|]*")


class PathRefused(ValueError):
    """A request path that is not inside an allowed root (or does not exist there): 422."""


@dataclass(frozen=True)
class PathPolicy:
    """The roots request paths may lead into, and the labels server paths get in messages."""

    data_roots: tuple[Path, ...]
    weights_roots: tuple[Path, ...]
    #: label -> root, most specific first, for :meth:`redact`
    labelled_roots: tuple[tuple[str, Path], ...]

    @classmethod
    def from_settings(cls, settings: Settings) -> PathPolicy:
        data = _real(settings.data_roots or [settings.data_dir or DEFAULT_DATA_DIR])
        store = _real([settings.store_dir])
        weights = _real([settings.weights_dir]) if settings.weights_dir else ()
        state = _real([settings.state_dir])
        labelled = [("<data>", r) for r in data] + [("<weights>", r) for r in weights]
        labelled += [("<store>", r) for r in store] + [("<state>", r) for r in state]
        # the longest root first, so a store inside the state dir reads as <store>/...
        labelled.sort(key=lambda item: len(str(item[1])), reverse=True)
        return cls(data, weights + store, tuple(labelled))

    # ---- confinement --------------------------------------------------------------------

    def confine(self, raw: str, roots: tuple[Path, ...], refusal: str) -> Path:
        """The real path ``raw`` names, if it lies inside one of ``roots``; else
        :class:`PathRefused` with ``refusal``, which never depends on what exists.

        A relative ``raw`` is relative to the first root. ``~`` is refused rather than
        expanded: the CLI expands it, so accepting it here would mean something else.
        """
        if not roots or not raw or "\x00" in raw or raw.startswith("~"):
            raise PathRefused(refusal)
        candidate = Path(raw)
        if not candidate.is_absolute():
            candidate = roots[0] / candidate
        try:
            real = candidate.resolve(strict=False)  # follows every symlink that exists
        except (OSError, RuntimeError, ValueError):  # a symlink loop, a bad name
            raise PathRefused(refusal) from None
        if not any(real.is_relative_to(root) for root in roots):
            raise PathRefused(refusal)
        return real

    def dataset(self, dataset: DatasetSpec) -> DatasetSpec:
        """``dataset`` with its paths confined to the data roots and resolved; the files must
        exist (checked after confinement, and named only as the caller wrote them)."""
        refusal = (
            "dataset.{field} must name a file or folder inside the data root "
            "(a relative path, or an absolute one under a configured root; no '~', no links "
            "leading out)"
        )
        update: dict[str, Any] = {}
        for field in ("path", "groups_csv"):
            raw = getattr(dataset, field)
            if raw is None:
                continue
            real = self.confine(raw, self.data_roots, refusal.format(field=field))
            if not real.exists():
                raise PathRefused(f"dataset.{field} {raw!r} not found in the data root")
            update[field] = str(real)
        return dataset.model_copy(update=update)

    def weights(self, weights: str | None) -> str | None:
        """``model.weights``: None, ``"imagenet"``, or a file inside the weights root or the
        model store (resolved); never a file elsewhere on the server."""
        if weights is None or weights == "imagenet":
            return weights
        refusal = (
            "model.weights must be null, 'imagenet' or a file inside the weights root "
            "(setting MEDROBUST_WEIGHTS_DIR) or the model store"
        )
        real = self.confine(weights, self.weights_roots, refusal)
        if not real.is_file():
            raise PathRefused(f"model.weights {weights!r} not found in the weights root")
        return str(real)

    def training_spec(self, spec: Any) -> Any:
        """A ``training.config.TrainingSpec`` with every path confined and resolved."""
        model = spec.model.model_copy(update={"weights": self.weights(spec.model.weights)})
        return spec.model_copy(update={"dataset": self.dataset(spec.dataset), "model": model})

    # ---- display ------------------------------------------------------------------------

    def redact(self, text: str) -> str:
        """``text`` with server paths shown relative to their root (``<data>/ham/x.csv``);
        any other absolute path becomes ``<path>``."""
        return redact_paths(text, self.labelled_roots)

    def redact_values(self, value: Any) -> Any:
        """``value`` (JSON-like) with :meth:`redact` applied to every string in it."""
        if isinstance(value, str):
            return self.redact(value)
        if isinstance(value, dict):
            return {key: self.redact_values(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [self.redact_values(item) for item in value]
        return value


def redact_paths(text: str, labelled_roots: tuple[tuple[str, Path], ...] = ()) -> str:
    """``text`` with each root in ``labelled_roots`` replaced by its label and every other
    absolute path by ``<path>``."""
    for label, root in labelled_roots:
        text = re.sub(rf"{re.escape(str(root))}(?=[/\s'\",;:)\]}}>]|$)", label, text)
    return _ABSOLUTE_PATH.sub("<path>", text)


def _real(paths: list[Path]) -> tuple[Path, ...]:
    return tuple(Path(path).expanduser().resolve() for path in paths)
