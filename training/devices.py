"""Which device TensorFlow computes on, and GPU memory growth: for worker start banners.

Call :func:`configure_devices` in the process that will run the models (a Celery pool process,
the API process), before any model is built: memory growth can only be set before a GPU is
initialised, and a process forked after CUDA initialisation cannot use the GPU.
"""

from __future__ import annotations

import tensorflow as tf


def enable_memory_growth() -> list[str]:
    """Let TensorFlow take GPU memory as needed instead of all of it; returns the GPUs touched."""
    touched = []
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, True)
            touched.append(gpu.name)
        except RuntimeError:  # already initialised: the setting is fixed for this process
            pass
    return touched


def describe_devices() -> str:
    """One line: ``TensorFlow 2.x on GPU:0 (NVIDIA H100 ...)``, or ``... on CPU (no GPU ...)``."""
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
