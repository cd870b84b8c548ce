"""Run a Python file on a chosen Keras backend in a fresh process (the backend is fixed at import).

The GPU machines have JAX and no TensorFlow; a JAX process here is made to see the same world: a
meta-path finder that refuses ``tensorflow`` (and its submodules) is installed before anything
else is imported, so any TensorFlow import on the JAX path fails loudly.

A TensorFlow process inherits the parent's ``TF_ENABLE_ONEDNN_OPTS`` (and ``ONEDNN_MAX_CPU_ISA``)
unless the caller overrides it, so the same comparison can run on oneDNN's kernels and on plain
TensorFlow's: both are legitimate float32 implementations, and which one a machine uses must not
decide whether the backends "agree".
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

_PREAMBLE = """
import runpy, sys

class _NoTensorFlow:
    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            raise ImportError(f"TensorFlow is blocked in this process (imported: {name})")
        return None

if sys.argv[1] == "block-tensorflow":
    sys.meta_path.insert(0, _NoTensorFlow())
script = sys.argv[2]
sys.argv = sys.argv[2:]
runpy.run_path(script, run_name="__main__")
"""


class BackendProcess:
    """``script args`` running on ``backend`` ("jax": TensorFlow unimportable), started at once so
    the caller can start another meanwhile; ``environment`` adds to (or overrides) the parent's
    variables, e.g. ``{"TF_ENABLE_ONEDNN_OPTS": "1"}``."""

    def __init__(
        self, backend: str, script: Path, *args: str, environment: dict[str, str] | None = None
    ) -> None:
        overrides = environment or {}
        self.label = f"{script.name} on {backend} {overrides or ''}".rstrip()
        env = {
            **os.environ,
            "KERAS_BACKEND": backend,
            "JAX_PLATFORMS": "cpu",
            "TF_CPP_MIN_LOG_LEVEL": "2",
            **overrides,
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        }
        mode = "block-tensorflow" if backend == "jax" else "allow-tensorflow"
        self.process = subprocess.Popen(
            [sys.executable, "-c", _PREAMBLE, mode, str(script), *args],
            env=env,
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def wait(self, timeout: float = 300) -> str:
        """The child's stdout; raises with its output when it failed or ran out of time."""
        try:
            stdout, stderr = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as error:
            self.process.kill()
            _, stderr = self.process.communicate()
            raise AssertionError(f"{self.label} ran over {timeout} s:\n{stderr[-8000:]}") from error
        if self.process.returncode != 0:
            raise AssertionError(
                f"{self.label} failed (rc {self.process.returncode}):\n"
                f"{stdout[-4000:]}\n{stderr[-8000:]}"
            )
        return stdout
