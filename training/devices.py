"""Which device the Keras backend computes on, and GPU memory growth: for worker start banners.

Call :func:`configure_devices` in the process that will run the models (a Celery pool process,
the API process), before any model is built: memory growth can only be set before a GPU is
initialised, and a process forked after CUDA initialisation cannot use the GPU.

TensorFlow and JAX name and configure devices differently; each is imported only on its own
backend, so a JAX machine without TensorFlow can print its banner.
"""

from __future__ import annotations

import os

import keras

BACKEND = keras.backend.backend()


def enable_memory_growth() -> list[str]:
    """Let the backend take GPU memory as needed instead of most of it; returns the GPUs touched.

    TensorFlow sets it per GPU. JAX reads ``XLA_PYTHON_CLIENT_PREALLOCATE`` when its GPU client
    starts, so here it only takes effect before the first computation (an explicit setting in
    the environment wins).
    """
    if BACKEND == "jax":
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        if os.environ["XLA_PYTHON_CLIENT_PREALLOCATE"] != "false":
            return []
        return [str(device) for device in _jax_gpus()]
    import tensorflow as tf

    touched = []
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
            touched.append(gpu.name)
        except RuntimeError:  # already initialised: the setting is fixed for this process
            pass
    return touched


def describe_devices() -> str:
    """One line: ``TensorFlow 2.x on GPU:0 (NVIDIA H100 ...)``, ``JAX 0.x on ...`` or ``... on CPU
    (no GPU visible)``."""
    if BACKEND == "jax":
        import jax

        gpus = _jax_gpus()
        if not gpus:
            return f"JAX {jax.__version__} on CPU (no GPU visible)"
        names = [f"GPU:{index} ({gpu.device_kind})" for index, gpu in enumerate(gpus)]
        return f"JAX {jax.__version__} on {', '.join(names)}"
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return f"TensorFlow {tf.__version__} on CPU (no GPU visible)"
    names = []
    for index, gpu in enumerate(gpus):
        details = tf.config.experimental.get_device_details(gpu)
        names.append(f"GPU:{index} ({details.get('device_name', gpu.name)})")
    return f"TensorFlow {tf.__version__} on {', '.join(names)}"


def configure_devices() -> str:
    """Enable memory growth, then describe the devices: the banner line a worker prints."""
    grown = enable_memory_growth()
    banner = describe_devices()
    return f"{banner}; memory growth on" if grown else banner


def _jax_gpus() -> list:
    import jax

    try:
        return jax.devices("gpu")
    except RuntimeError:  # no GPU platform in this jaxlib / no GPU visible
        return []
