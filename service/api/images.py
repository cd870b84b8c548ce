"""An uploaded image's bytes: what format they are and how big, before anything is decoded.

:func:`check_image` answers from the bytes alone, in this order, with a 4xx and a message for
the first failure:

1. more bytes than ``max_upload_bytes`` (413);
2. the format from the file's magic bytes, never from a declared type (415 unless allowed);
3. the pixel count from the header alone (PNG IHDR, JPEG SOF, DICOM Rows × Columns × frames),
   so a 50,000 × 50,000 PNG header costs nothing (413);
4. a truncated file (PNG without IEND, JPEG without EOI), or one too small to hold the pixels
   its header declares (400): decoders pad missing data grey, so a few KB claiming 7000 × 7000
   would otherwise cost the full frame's memory and yield a prediction on nothing.

Decoding (:func:`decode_image`, 400 if the decoder refuses) comes after, and is blocking: run it
through ``service.api.decoding.DecodePool``. DICOM is parsed once, by ``training.dicom``, at
step 3 (header) and rendered by :func:`decode_image`; its errors go to the one error mapper
(``service.api.errors``): an unreadable file 400, no pixel data 422, an unsupported transfer
syntax or pixel format 415, a refused multi-frame file 422, and, once the models are known
(:func:`check_accepted`), a Modality / Body Part the model does not accept 422 unless the
request allows the mismatch.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset

from service.api.errors import BadRequest, PayloadTooLarge, Unprocessable, UnsupportedMediaType
from service.config import Settings
from training.dicom import (
    DicomAcceptance,
    FrameChoice,
    ModalityMismatchError,
    check_acceptance,
    dicom_to_image,
    is_dicom,
    number_of_frames,
    read_dicom,
    require_pixel_data,
)
from training.preprocess import PreprocessConfig, decode_image_bytes, prepare_image

# Formats this module can size from the header; settings.allowed_formats picks among them.
SUPPORTED_FORMATS = ("png", "jpeg", "dicom")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8\xff"
# JPEG start-of-frame markers (baseline, progressive, lossless, arithmetic); not DHT/JPG/DAC.
JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
JPEG_SOS = 0xDA
# The fewest entropy-coded bits a Huffman-coded JPEG can spend, per unit of its full-resolution
# component (the one with the largest sampling factors covers every pixel). A Huffman code is at
# least 1 bit, so: sequential (SOF0/1) codes a DC difference and at least one AC symbol (EOB)
# per 8 × 8 block, >= 2 bits; progressive (SOF2) codes every block's DC in its first scan,
# >= 1 bit per block; lossless (SOF3) codes every sample, >= 1 bit per pixel. Arithmetic-coded
# and hierarchical frames have no such floor and are bounded by the pixel limit alone.
JPEG_MIN_BITS = {0xC0: (2, 8), 0xC1: (2, 8), 0xC2: (1, 8), 0xC3: (1, 1)}  # (bits, unit side px)
# Deflate's best case is 1032:1 (a 258-byte match in 2 bits), so a PNG's compressed data is at
# least its raw scanlines / 1032.
DEFLATE_MAX_RATIO = 1032
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # IHDR colour type -> samples per pixel


@dataclass(frozen=True)
class ImageUpload:
    """Checked (not yet decoded) image bytes."""

    data: bytes
    format: str
    width: int
    height: int
    frames: int = 1
    # The parsed DICOM header (pixels not yet decoded), kept so the file is parsed once.
    dataset: Dataset | None = field(default=None, compare=False, repr=False)


# ---------------------------------------------------------------------------------------------
# sniffing and header checks (no decoding)


def sniff_format(data: bytes) -> str | None:
    """``"png"``, ``"jpeg"``, ``"dicom"`` (Part 10: ``DICM`` after the 128-byte preamble, or at
    the start when a writer dropped the preamble)."""
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(JPEG_SOI):
        return "jpeg"
    if is_dicom(data):
        return "dicom"
    return None


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk, which PNG requires to come first."""
    width, height, _, _ = png_header(data)
    return width, height


def png_header(data: bytes) -> tuple[int, int, int, int]:
    """(width, height, bytes held, fewest bytes that can encode that many pixels)."""
    if len(data) < 33 or data[12:16] != b"IHDR" or data[8:12] != b"\x00\x00\x00\x0d":
        raise BadRequest("corrupt PNG: no IHDR header after the signature")
    width, height, bit_depth, colour_type = struct.unpack(">IIBB", data[16:26])
    if data.rfind(b"IEND") < 33:
        raise BadRequest("truncated PNG: the file ends before its IEND chunk")
    # Raw scanlines: a filter byte per row plus the samples (fewer than an interlaced image's).
    bits = width * height * bit_depth * PNG_CHANNELS.get(colour_type, 1)
    return width, height, len(data), (height + bits // 8) // DEFLATE_MAX_RATIO


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the first start-of-frame segment, walking the marker segments."""
    width, height, _, _ = jpeg_header(data)
    return width, height


def jpeg_header(data: bytes) -> tuple[int, int, int, int]:
    """(width, height, entropy-coded bytes from the first scan to the last EOI, the fewest such
    bytes that can encode that many pixels: 0 where the coding has no floor)."""
    sof, width, height, scan = _jpeg_frame(data)
    eoi = data.rfind(b"\xff\xd9")
    if eoi < scan:
        raise BadRequest("truncated JPEG: the file ends before its end-of-image marker")
    least = 0
    if sof in JPEG_MIN_BITS:
        bits, side = JPEG_MIN_BITS[sof]
        least = -(-width // side) * -(-height // side) * bits // 8
    return width, height, eoi - scan, least


def _jpeg_frame(data: bytes) -> tuple[int, int, int, int]:
    """(SOF marker, width, height, offset of the first scan's data) from the marker segments."""
    i, n = 2, len(data)
    frame: tuple[int, int, int] | None = None
    while i + 4 <= n:
        if data[i] != 0xFF:
            raise BadRequest(f"corrupt JPEG: expected a marker at byte {i}")
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, 0xD8) or 0xD0 <= marker <= 0xD7:  # segments without a length
            i += 2
            continue
        if marker == 0xD9 or (marker == JPEG_SOS and frame is None):
            break  # end of image, or a scan before any frame header
        length = int.from_bytes(data[i + 2 : i + 4], "big")
        if length < 2:
            break
        if marker == JPEG_SOS:
            assert frame is not None
            return (*frame, i + 2 + length)
        if marker in JPEG_SOF and frame is None:
            if i + 9 > n or length < 8:
                break
            height = int.from_bytes(data[i + 5 : i + 7], "big")
            width = int.from_bytes(data[i + 7 : i + 9], "big")
            frame = (marker, width, height)
        i += 2 + length
    if frame is None:
        raise BadRequest("corrupt or truncated JPEG: no frame header (SOF) found")
    raise BadRequest("corrupt or truncated JPEG: no scan (SOS) after the frame header")


def dicom_header(data: bytes) -> tuple[Dataset, int, int, int]:
    """The parsed dataset and its (width, height, frames), before any pixel is decoded.

    ``training.dicom`` errors (not DICOM, no pixel data) go up to the error mapper.
    """
    dataset = read_dicom(data)
    require_pixel_data(dataset)
    try:
        rows, columns = int(dataset.Rows), int(dataset.Columns)
    except Exception:  # absent, or raw bytes pydicom cannot convert (e.g. a US of 3 bytes)
        raise BadRequest("corrupt DICOM image: missing or invalid Rows / Columns") from None
    return dataset, columns, rows, number_of_frames(dataset)


def check_image(data: bytes, settings: Settings) -> ImageUpload:
    """Format and dimensions from the bytes alone; 413/415/400 on any limit or defect."""
    if len(data) > settings.max_upload_bytes:
        raise PayloadTooLarge(
            f"image of {len(data)} bytes is over the {settings.max_upload_bytes}-byte limit"
        )
    allowed = [f for f in SUPPORTED_FORMATS if f in settings.allowed_formats]
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedMediaType(
            f"not an image this service reads: send one of {', '.join(allowed)}"
        )
    if fmt not in allowed:
        raise UnsupportedMediaType(f"{fmt} images are not accepted here: send {', '.join(allowed)}")
    frames, dataset, have, least = 1, None, 0, 0
    if fmt == "png":
        width, height, have, least = png_header(data)
    elif fmt == "jpeg":
        width, height, have, least = jpeg_header(data)
    else:
        dataset, width, height, frames = dicom_header(data)
    if width < 1 or height < 1 or frames < 1:
        raise BadRequest(f"corrupt {fmt}: {width} × {height} × {frames} frames")
    pixels = width * height * frames
    if pixels > settings.max_image_pixels:
        raise PayloadTooLarge(
            f"image of {width} × {height}"
            + (f" × {frames} frames" if frames > 1 else "")
            + f" = {pixels:,} pixels is over the {settings.max_image_pixels:,}-pixel limit"
        )
    if have < least:
        raise BadRequest(
            f"corrupt or truncated {fmt}: its header declares {width} × {height} pixels, which "
            f"need at least {least:,} bytes of image data, but it holds {have:,}"
        )
    return ImageUpload(
        data=data, format=fmt, width=width, height=height, frames=frames, dataset=dataset
    )


# ---------------------------------------------------------------------------------------------
# decoding (blocking: run in a worker thread)


def decode_image(upload: ImageUpload, multiframe: FrameChoice = "first") -> np.ndarray:
    """Checked bytes → uint8 RGB or grayscale array; 400/415 when the decoder refuses.

    DICOM goes through ``training.dicom`` (its errors reach the error mapper): the first frame,
    or a refusal of multi-frame files when ``multiframe="refuse"``.
    """
    if upload.format == "dicom":
        dataset = upload.dataset if upload.dataset is not None else read_dicom(upload.data)
        return dicom_to_image(dataset, frame=multiframe)
    try:
        image = decode_image_bytes(upload.data, source=f"uploaded {upload.format}")
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    if image.shape[:2] != (upload.height, upload.width):
        raise BadRequest(
            f"corrupt {upload.format}: decoded {image.shape[1]} × {image.shape[0]}, "
            f"header says {upload.width} × {upload.height}"
        )
    return image


def check_accepted(
    upload: ImageUpload, models: list[tuple[str, DicomAcceptance]], allow_mismatch: bool
) -> None:
    """Refuse (422, via the error mapper) a DICOM image that a model does not declare it
    accepts, unless the request allows the mismatch. PNG/JPEG carry no modality."""
    if upload.dataset is None or allow_mismatch:
        return
    for ref, acceptance in models:
        try:
            check_acceptance(upload.dataset, acceptance, model=f"model {ref}")
        except ModalityMismatchError as exc:
            raise ModalityMismatchError(
                f"{exc}; set allow_modality_mismatch=true to run it anyway",
                modality=exc.modality,
                body_part=exc.body_part,
                acceptance=exc.acceptance,
            ) from None


def decode_and_prepare(
    upload: ImageUpload, configs: list[PreprocessConfig], multiframe: FrameChoice = "first"
) -> list[np.ndarray]:
    """Decode once, then prepare the pixels each model expects (its stored preprocessing)."""
    image = decode_image(upload, multiframe)
    try:
        return [prepare_image(image, config) for config in configs]
    except ValueError as exc:
        raise Unprocessable(f"cannot prepare the image for the model: {exc}") from None
