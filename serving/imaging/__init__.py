"""Chest X-ray serving: HTTP analysis, DICOMweb, DICOM/FHIR write-back, CDS Hooks.

The model itself (decode, quality gate, network) lives in ``models/``; this package
wires it to callers:

* :mod:`serving.imaging.routes` - the HTTP routes (contract C5 ``routes()``), each an
  endpoint of the one request pipeline (:mod:`serving.http`);
* :mod:`serving.imaging.exchange` - what those routes share: the imaging state, a
  bounded body, and a read's facts on the call's audit exchange;
* :mod:`serving.imaging.state` - what the routes hold, built by ``attach(runtime)``;
* :mod:`serving.imaging.analysis` - one image through decode, quality gate,
  preprocessing, model, thresholds and heatmap;
* :mod:`serving.imaging.batching` - adaptive batching of the model call;
* :mod:`serving.imaging.results` - stored results, heatmaps and indexes;
* :mod:`serving.imaging.dicom_out` / :mod:`serving.imaging.fhir` - a result as DICOM
  SR + secondary capture, or as a FHIR DiagnosticReport bundle;
* :mod:`serving.imaging.dicomweb` / :mod:`serving.imaging.studies` - the PACS client
  and the study routes (analyse on arrival, list a patient's studies);
* :mod:`serving.imaging.cds` - the ``cxr-triage`` CDS Hooks service.
"""

from __future__ import annotations

__all__: list[str] = []
