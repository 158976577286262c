"""Chest X-ray serving: HTTP analysis, DICOMweb, DICOM/FHIR write-back, CDS Hooks.

The model itself (decode, quality gate, network) lives in ``models/``; this package
wires it to callers: :mod:`serving.imaging.routes` mounts the HTTP routes,
:mod:`serving.imaging.analysis` runs one image through the pipeline,
:mod:`serving.imaging.store` keeps results, :mod:`serving.imaging.dicom_out` and
:mod:`serving.imaging.fhir` turn a result into DICOM SR / secondary capture and FHIR,
:mod:`serving.imaging.dicomweb` talks to the PACS and :mod:`serving.imaging.cds`
answers the ``cxr-triage`` CDS Hooks service.
"""

from __future__ import annotations

__all__: list[str] = []
