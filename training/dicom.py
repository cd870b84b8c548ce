"""DICOM in: read a Part 10 file, check it suits a model, and render its pixels for the model.

The model was trained on display images (8-bit PNG/JPEG), so a DICOM image must first become
what a viewer would show. :func:`dicom_to_image` follows the grayscale pipeline of PS3.4 N.2
and PS3.3 C.11, in this order:

1. decode the first frame (natively encoded or compressed: JPEG baseline/extended/lossless,
   JPEG-LS, JPEG 2000, HTJ2K, RLE, through pydicom's decoders and the pylibjpeg plugins);
2. Modality LUT (Modality LUT Sequence, or Rescale Slope/Intercept) → modality values;
3. VOI: the first item of the VOI LUT Sequence, else the first Window Center/Width pair (with
   its VOI LUT Function: LINEAR, LINEAR_EXACT or SIGMOID), else — documented fallback — the
   min–max of the frame's modality values. Enhanced multi-frame files carry these per frame in
   their functional groups; the first frame's values are used;
4. MONOCHROME1 ("higher is darker") is inverted after the VOI, so air is black as in training.

Colour images skip 2–4: RGB passes (scaled to 8 bits), YBR_FULL / YBR_FULL_422 become RGB
(pydicom's decoders convert them; JPEG 2000's YBR_ICT / YBR_RCT come out of the codec as RGB),
Planar Configuration is undone by the decoder, and PALETTE COLOR goes through its colour LUT.
Presentation LUT Shape is not applied on top: for MONOCHROME1 it only restates the inversion.

Every refusal is a :class:`DicomInputError` (a ``ValueError``) whose message says why in words
an integrator understands, and never carries patient-identifying values. A file cut short is
refused as corrupt even where pydicom reads it without complaint (:func:`require_pixel_data`),
and Rescale or Window values that are not finite are refused rather than rendered as one grey.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pydicom
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi, as_pixel_options
from pydicom.pixels.decoders.base import Decoder, get_decoder
from pydicom.uid import UID

PREAMBLE_BYTES = 128
MAGIC = b"DICM"
PIXEL_DATA_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
MONOCHROME = ("MONOCHROME1", "MONOCHROME2")
# YCbCr spaces pydicom converts to RGB itself (raw=False); the JPEG 2000 ones leave the codec RGB.
YBR_TO_RGB = ("YBR_FULL", "YBR_FULL_422")
UNDEFINED_LENGTH = 0xFFFFFFFF

FrameChoice = Literal["first", "refuse"]


class DicomInputError(ValueError):
    """A DICOM input this project cannot use; the message says why."""


class NotDicomError(DicomInputError):
    """Not a readable DICOM Part 10 file."""


class NoPixelDataError(DicomInputError):
    """A valid DICOM object without an image (a structured report, an RT plan, ...)."""


class CorruptPixelDataError(DicomInputError):
    """The pixel data cannot be decoded as its header describes (truncated, inconsistent)."""


class NonFiniteValueError(DicomInputError):
    """A well-formed file whose Rescale Slope / Intercept or Window Center / Width is not a
    finite number (NaN, ±inf): every pixel would come out as one grey, and a model would still
    answer for it, so the image is refused instead of rendered."""


class UnsupportedTransferSyntaxError(DicomInputError):
    """The pixel data is encoded in a transfer syntax no installed decoder handles."""

    def __init__(self, uid: str, reason: str) -> None:
        self.uid = str(uid)
        self.syntax_name = UID(uid).name
        known = self.syntax_name != self.uid
        label = (
            f"{self.syntax_name!r} ({self.uid})" if known else f"{self.uid} (not a standard one)"
        )
        super().__init__(f"cannot decode DICOM pixel data in transfer syntax {label}: {reason}")


class UnsupportedPixelFormatError(DicomInputError):
    """Decodable, but a photometric interpretation or sample layout this renderer lacks."""


class MultiFrameRefusedError(DicomInputError):
    """A multi-frame file where the caller asked for single-frame images only."""


class ModalityMismatchError(DicomInputError):
    """The file's modality or body part is not one the model declares it accepts."""

    def __init__(
        self, message: str, *, modality: str, body_part: str, acceptance: DicomAcceptance
    ) -> None:
        super().__init__(message)
        self.modality = modality
        self.body_part = body_part
        self.acceptance = acceptance


# ---------------------------------------------------------------------------------------------
# reading


def is_dicom(data: bytes) -> bool:
    """Whether ``data`` looks like Part 10: ``DICM`` after the preamble, or leading (preamble
    stripped by some writers); cheap enough to sniff uploads with."""
    return data[PREAMBLE_BYTES : PREAMBLE_BYTES + 4] == MAGIC or data[:4] == MAGIC


def read_dicom(data: bytes | str | Path) -> Dataset:
    """Parse a DICOM Part 10 file (bytes or a path); :class:`NotDicomError` if it is not one.

    A file whose 128-byte preamble was stripped but which starts with ``DICM`` and its File Meta
    Information is read as if the preamble were there: that is unambiguous. A bare dataset
    without File Meta Information is refused: pydicom can only guess its encoding (``force``),
    and a guess can turn any bytes into a "dataset".
    """
    raw = Path(data).read_bytes() if isinstance(data, (str, Path)) else bytes(data)
    if raw[:4] == MAGIC and raw[PREAMBLE_BYTES : PREAMBLE_BYTES + 4] != MAGIC:
        raw = bytes(PREAMBLE_BYTES) + raw
    if raw[PREAMBLE_BYTES : PREAMBLE_BYTES + 4] != MAGIC:
        raise NotDicomError(
            "not a DICOM Part 10 file: no 'DICM' marker after the 128-byte preamble "
            "(files without DICOM File Meta Information are not accepted)"
        )
    try:
        dataset = pydicom.dcmread(io.BytesIO(raw))
    except Exception as exc:  # untrusted bytes: any parser failure means a corrupt file
        raise NotDicomError(f"corrupt DICOM file (truncated or malformed): {exc}") from None
    if not dataset.file_meta.get("TransferSyntaxUID"):
        raise NotDicomError("corrupt DICOM file: its File Meta Information has no Transfer Syntax")
    return dataset


def require_pixel_data(ds: Dataset) -> None:
    """:class:`NoPixelDataError`, naming the kind of object, unless ``ds`` holds an image.

    A file cut short before or inside its pixel data is :class:`CorruptPixelDataError` instead:
    pydicom reads a truncated file without raising (see :func:`ends_inside_an_element`), so
    the pixel data is simply missing. An image SOP class without pixel data is refused as
    corrupt too (the Image Pixel module is mandatory in every image IOD): most likely a file
    cut exactly between two elements, which leaves no other trace.
    """
    if any(keyword in ds for keyword in PIXEL_DATA_KEYWORDS):
        return
    kind = UID(header_value(ds, "SOPClassUID")).name
    if ends_inside_an_element(ds):
        raise CorruptPixelDataError(
            "corrupt DICOM file: it ends inside a data element, before its pixel data (truncated)"
        )
    if "Image Storage" in kind:
        raise CorruptPixelDataError(
            f"corrupt DICOM file: a {kind} object without pixel data (truncated?)"
        )
    raise NoPixelDataError(
        f"the DICOM file has no pixel data: it is not an image ({kind or 'unknown SOP class'})"
    )


def ends_inside_an_element(ds: Dataset) -> bool:
    """Whether pydicom stopped reading ``ds`` inside an element because its file ended there.

    pydicom is lenient with truncated files: when the file ends inside an element of undefined
    length (encapsulated pixel data, a sequence) it warns and returns the dataset *empty*, and
    when it ends inside a value of defined length that value comes back short. (A cut inside a
    nested item makes pydicom raise, which :func:`read_dicom` already refuses.)
    """
    if len(ds) == 0:
        return True
    last = ds.get_item(max(ds.keys()))  # raw as read: no value conversion
    return (
        isinstance(last, RawDataElement)
        and last.length != UNDEFINED_LENGTH
        and last.value is not None
        and len(last.value) < last.length
    )


def number_of_frames(ds: Dataset) -> int:
    """Number of Frames (absent, empty or zero means one, as pydicom reads it)."""
    try:
        return max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    except (TypeError, ValueError):
        raise CorruptPixelDataError("invalid Number of Frames (0028,0008)") from None


def header_value(ds: Dataset, keyword: str) -> str:
    """A text element as a stripped string, ``""`` when absent or unreadable (an untrusted file
    may hold bytes pydicom cannot convert; a header value is never worth failing a request)."""
    try:
        return str(ds.get(keyword, "") or "").strip()
    except Exception:  # conversion of a malformed raw element
        return ""


def _transfer_syntax(ds: Dataset) -> UID:
    syntax = getattr(ds, "file_meta", Dataset()).get("TransferSyntaxUID")
    if not syntax:
        raise NotDicomError("the DICOM dataset has no Transfer Syntax UID in its File Meta")
    return UID(syntax)


def _decoder(ds: Dataset) -> Decoder:
    uid = _transfer_syntax(ds)
    try:
        decoder = get_decoder(uid)
    except NotImplementedError:
        raise UnsupportedTransferSyntaxError(
            uid, "no decoder exists for it here; send it uncompressed or in JPEG / JPEG 2000 / RLE"
        ) from None
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies) or "no plugin installed"
        raise UnsupportedTransferSyntaxError(uid, f"its decoder is not installed ({missing})")
    return decoder


# ---------------------------------------------------------------------------------------------
# rendering


def dicom_to_image(ds: Dataset, *, frame: FrameChoice = "first") -> np.ndarray:
    """The first frame of ``ds`` as a display-ready ``uint8`` (H, W, 3) RGB image.

    ``frame="refuse"`` raises :class:`MultiFrameRefusedError` for a multi-frame file instead of
    taking its first frame. Ready for ``training.preprocess.prepare_image``.
    """
    require_pixel_data(ds)
    decoder = _decoder(ds)
    frames = number_of_frames(ds)
    if frames > 1 and frame == "refuse":
        raise MultiFrameRefusedError(
            f"the DICOM file holds {frames} frames and multi-frame images were refused: "
            "send one frame per file, or allow the first frame to be used"
        )
    pixels, photometric = _decode_first_frame(ds, decoder)
    if photometric in MONOCHROME:
        if pixels.ndim != 2:
            raise UnsupportedPixelFormatError(
                f"{photometric} with {pixels.shape[-1]} samples per pixel is inconsistent"
            )
        view = _first_frame_view(ds)
        unit = _voi_unit(_modality_values(pixels, view), view)
        if photometric == "MONOCHROME1":
            unit = 1.0 - unit
        gray = _to_uint8(unit)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    return _colour(pixels, photometric, ds)


def _decode_first_frame(ds: Dataset, decoder: Decoder) -> tuple[np.ndarray, str]:
    """Decode frame 0 only; the photometric interpretation is the decoder's *output* one."""
    try:
        options = as_pixel_options(ds)
        array, meta = decoder.as_array(ds, index=0, validate=True, **options)
    except NotImplementedError as exc:
        raise UnsupportedPixelFormatError(f"cannot decode this DICOM pixel layout: {exc}") from None
    except Exception as exc:  # untrusted bytes: truncated or inconsistent pixel data
        name = _transfer_syntax(ds).name
        raise CorruptPixelDataError(f"corrupt DICOM pixel data ({name}): {exc}") from None
    except BaseException as exc:
        # A Rust decoder plugin (pylibjpeg-rle) panics on some malformed frames, and pyo3's
        # PanicException derives from BaseException: it would escape every ``except Exception``
        # up to the server. Only that one is turned into a refusal.
        if type(exc).__module__ != "pyo3_runtime":
            raise
        name = _transfer_syntax(ds).name
        raise CorruptPixelDataError(
            f"corrupt DICOM pixel data ({name}): the decoder failed: {exc}"
        ) from None
    photometric = str(meta.get("photometric_interpretation", "")).strip().upper()
    return np.asarray(array), photometric


# Attributes of the Modality LUT and VOI LUT modules, and where enhanced multi-frame objects
# keep them: per-frame or shared functional groups (PS3.3 C.7.6.16.2.9 and .10).
_LUT_KEYWORDS = (
    "ModalityLUTSequence",
    "RescaleSlope",
    "RescaleIntercept",
    "VOILUTSequence",
    "WindowCenter",
    "WindowWidth",
    "VOILUTFunction",
)
_FUNCTIONAL_GROUPS = ("PixelValueTransformationSequence", "FrameVOILUTSequence")


def _first_frame_view(ds: Dataset) -> Dataset:
    """The LUT attributes that hold for frame 0: top level, then shared, then per-frame groups."""
    view = Dataset()
    view.file_meta = ds.file_meta  # endianness of OW LUT data
    view.set_original_encoding(*ds.original_encoding)
    for keyword in _LUT_KEYWORDS:
        if keyword in ds:
            view[keyword] = ds[keyword]
    for groups in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        items = ds.get(groups) or []
        if not items:
            continue
        for macro in _FUNCTIONAL_GROUPS:
            for item in (items[0].get(macro) or [])[:1]:
                for keyword in _LUT_KEYWORDS:
                    if keyword in item:
                        view[keyword] = item[keyword]
    return view


def _modality_values(pixels: np.ndarray, view: Dataset) -> np.ndarray:
    """Stored values → modality values (Modality LUT, or Rescale Slope/Intercept).

    An untrusted header may hold a Modality LUT without its data or a rescale value that is
    not a number; pydicom then fails with whatever error numpy or its parser raises. A rescale
    that parses to NaN or ±inf (or overflows float64) gives values that are not finite:
    :class:`NonFiniteValueError`, rather than the all-black image min–max would make of them.
    """
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # judged below, not warned about
            values = apply_modality_lut(pixels, view)
    except Exception as exc:  # a malformed Modality LUT or rescale value in an untrusted file
        raise CorruptPixelDataError(
            f"malformed Modality LUT or Rescale Slope / Intercept: {exc}"
        ) from None
    if not np.isfinite(values).all():
        slope, intercept = (
            header_value(view, "RescaleSlope"),
            header_value(view, "RescaleIntercept"),
        )
        raise NonFiniteValueError(
            f"Rescale Slope {slope or '(none)'} / Intercept {intercept or '(none)'} give pixel "
            "values that are not finite numbers: the image cannot be rendered"
        )
    return values


def _voi_unit(values: np.ndarray, view: Dataset) -> np.ndarray:
    """Modality values → [0, 1] through the VOI LUT, else the window, else min–max."""
    lut = (view.get("VOILUTSequence") or [None])[0]
    if lut is not None and "LUTDescriptor" in lut and "LUTData" in lut:
        return _apply_voi_lut(values, view, lut)
    window = first_window(view)
    if window is not None:
        return window_unit(values, *window)
    values = values.astype(np.float64)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values)
    return (values - low) / (high - low)


def _apply_voi_lut(values: np.ndarray, view: Dataset, item: Dataset) -> np.ndarray:
    """The first VOI LUT, its output scaled by the LUT's nominal range (2^bits − 1).

    Inputs are rounded and clipped to the LUT's domain first, as the standard maps every value
    below the first entry to it and every value above the last to the last.
    """
    try:  # an untrusted file: a descriptor without its 3 values, LUT Data that is empty ...
        entries, first, bits = (int(v) for v in item.LUTDescriptor)
        entries = entries or 1 << 16
        index = np.clip(np.rint(values), first, first + entries - 1).astype(np.int64)
        output = apply_voi(index, view, index=0)
    except (NotImplementedError, ValueError, TypeError, AttributeError) as exc:
        raise UnsupportedPixelFormatError(f"cannot apply the VOI LUT: {exc}") from None
    top = max(float(2**bits - 1), float(np.max(output)), 1.0)
    return output.astype(np.float64) / top


def first_window(view: Dataset) -> tuple[float, float, str] | None:
    """(centre, width, VOI LUT Function) of the first window, or ``None`` when there is no
    usable one (absent, empty, not a number, or a width the function does not allow).

    A centre or width that parses to NaN or ±inf is :class:`NonFiniteValueError`: the file
    states a window no display can apply, so it is refused rather than silently replaced.
    """
    if "WindowCenter" not in view or "WindowWidth" not in view:
        return None
    try:
        centre = float(_first_value(view["WindowCenter"].value))
        width = float(_first_value(view["WindowWidth"].value))
    except (TypeError, ValueError, IndexError):
        return None
    if not (np.isfinite(centre) and np.isfinite(width)):
        raise NonFiniteValueError(
            f"Window Center {centre} / Width {width} is not finite: the image cannot be rendered"
        )
    function = str(view.get("VOILUTFunction", "") or "LINEAR").strip().upper()
    if function not in ("LINEAR", "LINEAR_EXACT", "SIGMOID"):
        function = "LINEAR"  # the standard's default when the value is absent
    minimum_ok = width >= 1 if function == "LINEAR" else width > 0
    if not minimum_ok:
        return None
    return centre, width, function


def _first_value(value: Any) -> Any:
    """The first of several values (VM > 1), or the value itself."""
    return value[0] if isinstance(value, (MultiValue, list, tuple)) else value


def window_unit(values: np.ndarray, centre: float, width: float, function: str) -> np.ndarray:
    """The window of PS3.3 C.11.2.1.2 (LINEAR) and C.11.2.1.3 (LINEAR_EXACT, SIGMOID) onto
    [0, 1] instead of an output bit range."""
    x = values.astype(np.float64)
    if function == "SIGMOID":
        return 1.0 / (1.0 + np.exp(-4.0 * (x - centre) / width))
    if function == "LINEAR_EXACT":
        return np.clip((x - centre) / width + 0.5, 0.0, 1.0)
    c, w = centre - 0.5, width - 1.0
    if w == 0:  # a one-value-wide window is a threshold
        return (x > c).astype(np.float64)
    return np.clip((x - c) / w + 0.5, 0.0, 1.0)


def _colour(pixels: np.ndarray, photometric: str, ds: Dataset) -> np.ndarray:
    """A decoded colour frame → uint8 RGB."""
    if photometric == "PALETTE COLOR":
        if pixels.ndim != 2:
            raise UnsupportedPixelFormatError("PALETTE COLOR needs one sample per pixel")
        try:
            rgb = apply_color_lut(pixels, ds)
        except Exception as exc:  # a malformed palette in an untrusted file
            raise UnsupportedPixelFormatError(f"cannot apply the colour palette: {exc}") from None
        return _to_uint8(rgb.astype(np.float64) / np.iinfo(rgb.dtype).max)
    if photometric != "RGB":
        raise UnsupportedPixelFormatError(
            f"photometric interpretation {photometric or '(none)'} is not supported: "
            "send MONOCHROME1/2, RGB, YBR_FULL, YBR_FULL_422 or PALETTE COLOR"
        )
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise UnsupportedPixelFormatError(f"RGB pixel data of shape {pixels.shape}")
    if pixels.dtype == np.uint8:
        return np.ascontiguousarray(pixels)
    bits = int(ds.get("BitsStored", 8) or 8)
    return _to_uint8(pixels.astype(np.float64) / float(2**bits - 1))


def _to_uint8(unit: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(unit * 255.0), 0, 255).astype(np.uint8)


# ---------------------------------------------------------------------------------------------
# what a model accepts


class DicomAcceptance(BaseModel):
    """The DICOM images a model is meant for: Modality (0008,0060) and Body Part Examined
    (0018,0015) values, compared case-insensitively. An empty list accepts any value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    modalities: list[str] = Field(
        default_factory=list, description="e.g. ['CR', 'DX']; empty: any modality"
    )
    body_parts: list[str] = Field(
        default_factory=list, description="e.g. ['CHEST']; empty: any body part"
    )

    @field_validator("modalities", "body_parts")
    @classmethod
    def _upper(cls, values: list[str]) -> list[str]:
        return [v.strip().upper() for v in values if v.strip()]

    def describe(self) -> str:
        modality = "/".join(self.modalities) or "any modality"
        body = "/".join(self.body_parts) or "any body part"
        return f"{modality}, {body}"


def check_acceptance(ds: Dataset, acceptance: DicomAcceptance, *, model: str = "the model") -> None:
    """Raise :class:`ModalityMismatchError` unless ``ds`` is what ``acceptance`` declares.

    A missing Body Part Examined is a mismatch when body parts are declared: the model cannot
    be shown to suit the image. ``model`` names the model in the message.
    """
    modality = header_value(ds, "Modality").upper()
    body_part = header_value(ds, "BodyPartExamined").upper()
    problems = []
    if acceptance.modalities and modality not in acceptance.modalities:
        problems.append(f"the file's Modality is {modality or '(missing)'}")
    if acceptance.body_parts and not body_part:
        problems.append("the file has no Body Part Examined (0018,0015)")
    elif acceptance.body_parts and body_part not in acceptance.body_parts:
        problems.append(f"the file's Body Part Examined is {body_part}")
    if problems:
        raise ModalityMismatchError(
            f"{model} accepts {acceptance.describe()} images, but {' and '.join(problems)}",
            modality=modality,
            body_part=body_part,
            acceptance=acceptance,
        )
