"""PACS integration: DICOM result objects (SR, Secondary Capture), DICOMweb and DIMSE adapters."""
