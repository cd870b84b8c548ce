"""Generated DICOM Part 10 files for the edge cases no shipped file covers (pydicom-built)."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

# Values a test asserts never reach a response, an error message or a log.
PATIENT_NAME = "Doe^Jane^Secret"
PATIENT_ID = "PID-7731-SECRET"


def make_dataset(
    pixels: np.ndarray,
    *,
    photometric: str | None = None,
    bits_stored: int | None = None,
    transfer_syntax: str = ExplicitVRLittleEndian,
    planar: int = 0,
    **attributes: Any,
) -> Dataset:
    """A Secondary Capture dataset holding ``pixels`` natively: (H, W), (H, W, 3) or frames
    first; ``attributes`` set any further element by keyword (Modality, WindowCenter, ...)."""
    pixels = np.asarray(pixels)
    colour = pixels.shape[-1] == 3 and pixels.ndim >= 3
    frames = pixels.shape[0] if pixels.ndim == (4 if colour else 3) else 1
    rows, columns = pixels.shape[-3:-1] if colour else pixels.shape[-2:]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = transfer_syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = PATIENT_NAME, PATIENT_ID, "19700101"
    ds.Modality = "OT"
    ds.Rows, ds.Columns = int(rows), int(columns)
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = photometric or ("RGB" if colour else "MONOCHROME2")
    if colour:
        ds.PlanarConfiguration = planar
    bits = pixels.dtype.itemsize * 8
    ds.BitsAllocated = bits
    ds.BitsStored = bits_stored or bits
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if pixels.dtype.kind == "i" else 0
    if colour and planar:
        pixels = np.moveaxis(pixels, -1, -3)  # (…, 3, H, W): one plane per colour
    ds.PixelData = np.ascontiguousarray(pixels).tobytes()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def to_bytes(ds: Dataset, **save_options: Any) -> bytes:
    """Part 10 bytes; ``save_options`` go to ``save_as`` (a private transfer syntax needs
    ``implicit_vr`` and ``little_endian``)."""
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True, **save_options)
    return buffer.getvalue()


def make_dicom(pixels: np.ndarray, **options: Any) -> bytes:
    """``make_dataset`` written as Part 10 bytes."""
    return to_bytes(make_dataset(pixels, **options))


def dicom_bytes(
    rows: int = 24,
    columns: int = 20,
    frames: int = 1,
    photometric: str = "MONOCHROME2",
    seed: int = 0,
) -> tuple[bytes, np.ndarray]:
    """A DICOM Part 10 file with 12-bit grayscale pixels, and its pixel array."""
    rng = np.random.default_rng(seed)
    shape = (frames, rows, columns) if frames > 1 else (rows, columns)
    pixels = rng.integers(0, 4096, shape, dtype=np.uint16)
    return make_dicom(pixels, photometric=photometric, bits_stored=12), pixels
