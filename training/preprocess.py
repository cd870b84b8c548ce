"""Pixel preparation shared by training, evaluation and serving (paper §3.2).

Everything here works on numpy uint8/float images *before* the model. The ImageNet mean
subtraction is deliberately not here: it is a layer inside the model
(``training.models.layers.CaffePreprocess``) so that the model takes raw pixels in [0, 255]
and attacks and Grad-CAM work in pixel space.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from training.dicom import DicomInputError, dicom_to_image, is_dicom, read_dicom

# sigmaX of the chest x-ray edge filter, as the paper gives it.
EDGE_FILTER_SIGMA = 20.0


class PreprocessConfig(BaseModel):
    """How raw images become model input; stored with every model so serving repeats it exactly."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input_size: int = Field(224, ge=32, le=1024, description="square side the image is resized to")
    edge_filter: bool = Field(False, description="the paper's chest x-ray filter (chest task only)")
    interpolation: Literal["area", "linear", "cubic"] = "area"


_INTERPOLATION = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}


def chest_xray_edge_filter(image: np.ndarray) -> np.ndarray:
    """The paper's chest x-ray filter: min-max to [0, 255], ``4x - 4*blur(x) + 128``, clipped.

    ``blur`` is ``cv2.GaussianBlur(x, (0, 0), sigmaX=20)``: a zero kernel size lets OpenCV derive it
    from sigma, and sigmaY=0 means "same as sigmaX", exactly as §3.2 states. Works per channel on a
    2-D or 3-D image and returns float32 in [0, 255].
    """
    x = image.astype(np.float32)
    low, high = float(x.min()), float(x.max())
    x = (x - low) * (255.0 / (high - low)) if high > low else np.zeros_like(x)
    blur = cv2.GaussianBlur(x, (0, 0), sigmaX=EDGE_FILTER_SIGMA, sigmaY=0)
    return np.clip(4.0 * x - 4.0 * blur + 128.0, 0.0, 255.0)


def to_rgb(image: np.ndarray) -> np.ndarray:
    """Grayscale (H, W) or (H, W, 1) becomes three equal channels; RGBA loses alpha; RGB passes."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise ValueError(f"Expected an image of shape (H, W) or (H, W, C). Received {image.shape}")
    channels = image.shape[2]
    if channels == 1:
        return np.repeat(image, 3, axis=2)
    if channels == 4:
        return image[:, :, :3]
    if channels == 3:
        return image
    raise ValueError(f"Expected 1, 3 or 4 channels. Received {channels}")


def prepare_image(image: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """One decoded image (RGB or grayscale, any size) → float32 (S, S, 3) raw pixels in [0, 255].

    The edge filter runs at the source resolution before resizing, as in the paper's pipeline
    where it was applied to the full images.
    """
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if config.edge_filter:
        image = chest_xray_edge_filter(image)
    image = image.astype(np.float32)
    size = (config.input_size, config.input_size)
    if image.shape[:2] != size[::-1]:
        image = cv2.resize(image, size, interpolation=_INTERPOLATION[config.interpolation])
    return to_rgb(image).astype(np.float32)


def prepare_batch(
    images: np.ndarray | Sequence[np.ndarray], config: PreprocessConfig
) -> np.ndarray:
    """``prepare_image`` over a stack, or a list of any-sized images → float32 (N, S, S, 3)."""
    out = np.empty((len(images), config.input_size, config.input_size, 3), dtype=np.float32)
    for i, image in enumerate(images):
        out[i] = prepare_image(image, config)
    return out


def read_image(path: str) -> np.ndarray:
    """Decode an image file to RGB or grayscale uint8; raise naming the file if unreadable.

    16-bit files are scaled by their type's range so every source lands in [0, 255]; DICOM files
    are rendered by :mod:`training.dicom` (LUTs, window, MONOCHROME1 inversion) to RGB.
    """
    data = np.fromfile(path, dtype=np.uint8)
    return decode_image_bytes(data.tobytes(), source=path)


def decode_image_bytes(data: bytes, source: str = "image") -> np.ndarray:
    """``read_image`` for bytes already in memory (uploads); ``source`` names them in errors."""
    if is_dicom(data):
        try:
            return dicom_to_image(read_dicom(data))
        except DicomInputError as exc:
            raise ValueError(f"cannot decode {source!r}: {exc}") from exc
    buffer = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(buffer, cv2.IMREAD_UNCHANGED) if buffer.size else None
    if image is None:
        raise ValueError(f"cannot decode {source!r} (corrupt, truncated or not an image)")
    if image.dtype != np.uint8:
        scale = 255.0 / np.iinfo(image.dtype.name).max if image.dtype.kind in "ui" else 1.0
        image = np.clip(image.astype(np.float32) * scale, 0, 255).astype(np.uint8)
    if image.ndim == 3:
        code = cv2.COLOR_BGRA2RGBA if image.shape[2] == 4 else cv2.COLOR_BGR2RGB
        image = cv2.cvtColor(image, code)
    return image
