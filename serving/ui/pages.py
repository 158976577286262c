"""The explanation pages and model cards (contract C5).

* ``GET /ui/explain/{card uuid}`` - why an NCD card says what it says.
* ``GET /ui/explain/cxr/{result id}`` - the X-ray reader for a stored chest X-ray read.
* ``GET /ui/explain/cxr/{result id}/heatmap.png`` and ``.../image.png`` - its overlay
  and the display copy of the original (each opening audited as a read).
* ``GET /ui/explain/cxr/{result id}/pixels`` - the original's own values (uint16, gzip)
  that the reader windows, for reads stored since format 3 (audited as a read); 410
  once the site's retention emptied them (``TONLE_IMAGING_PIXELS_DAYS``).
* ``GET /ui/models/{name}/{version}`` - the model card of a loaded model.

The explanation pages and their images are opened from cards in a browser without
credentials: their links are signed (:mod:`serving.ui.links`, ``?exp=&sig=``; 403 /
410 otherwise, before any lookup). They are :func:`serving.http.pipeline.endpoint` s
with the ``link`` scheme: each opening that shows something is audited as ``read``
(404 as refused) under the tenant the card or read was made for, committed before the
page leaves. An NCD explanation is read from the service database, where the CDS call
stored it with its audit row, so any worker shows it.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from models.who_chart import ChartGrid, grid
from serving import i18n
from serving.audit.feedback import CardShown
from serving.cards import (
    country_name,
    feature_label,
    missing_how,
    missing_text,
    support_text,
    value_text,
)
from serving.http.audit import Exchange
from serving.http.caller import link_caller
from serving.http.pipeline import Answer, endpoint
from serving.imaging.card import score_text
from serving.imaging.results import CopyRemoved, CxrResult, StudyRef
from serving.runtime import Runtime
from serving.synthetic import DEMO_NOTE, trained_on_synthetic
from serving.ui.explanations import FACTOR_FULL_SCALE, NcdExplanation, headline_metrics
from serving.ui.render import (
    CARD_ID,
    language,
    message_page,
    refused_page,
    render_page,
    runtime_of,
    script_json,
    signed_link,
)

__all__ = [
    "copy_removed_text",
    "cxr_png",
    "cxr_store",
    "explain_cxr",
    "explain_ncd",
    "model_card",
    "model_card_figure",
    "side_marker",
    "stored_explanation",
]

logger = logging.getLogger(__name__)

# --- NCD explanation -------------------------------------------------------------------


def stored_explanation(runtime: Runtime, card_id: str) -> NcdExplanation | None:
    """The stored explanation of a card; None if unknown, purged or past its retention."""
    lookup = getattr(runtime.audit, "explanation", None)
    found = lookup(card_id) if lookup is not None and CARD_ID.match(card_id) else None
    if found is None or found.expires <= datetime.now(UTC):
        return None
    return NcdExplanation.model_validate_json(found.content)


def _opened(runtime: Runtime, card_id: str, exchange: Exchange) -> NcdExplanation | None:
    """The stored explanation of a card, with the facts of its opening on ``exchange``:
    the card's tenant and patient (from the card's own audit row) and its model."""
    ex = stored_explanation(runtime, card_id)
    if ex is None:
        return None
    lookup = getattr(runtime.audit, "card_shown", None)
    shown: CardShown | None = lookup(card_id) if lookup is not None else None
    exchange.caller = link_caller(shown.caller_tenant if shown else None)
    exchange.patient_ref = shown.patient_ref if shown else None
    exchange.model = ex.model
    return ex


def _who_grid(ex: NcdExplanation, runtime: Runtime) -> ChartGrid | None:
    who = ex.who
    if who is None:
        return None
    used = who.inputs_used
    col = used.get("total_chol") if who.model == "lab" else used.get("bmi")
    sex = str(used.get("sex"))
    if sex not in ("female", "male"):
        return None
    return grid(
        who.model,
        sex="male" if sex == "male" else "female",
        smoking=bool(used.get("smoking")),
        diabetes=bool(used.get("diabetes")) if who.model == "lab" else None,
        region=ex.who_region,
        country=ex.who_country,
        age=float(used["age"]),  # type: ignore[arg-type]
        sbp=float(used["sbp"]),  # type: ignore[arg-type]
        col_value=float(col) if col is not None else None,  # type: ignore[arg-type]
    )


async def _explain_ncd(request: Request, exchange: Exchange) -> Answer:
    """``GET /ui/explain/{card_id}``: the NCD explanation page."""
    runtime = runtime_of(request)
    ex = await run_in_threadpool(_opened, runtime, request.path_params["card_id"], exchange)
    if ex is None:
        return _not_found(request)
    lang = language(request)
    meta = runtime.ncd[ex.service_id].metadata if ex.service_id in runtime.ncd else None
    units = {spec.name: spec.unit for spec in meta.features} if meta is not None else {}
    if meta is not None and (meta.name, meta.version) != (ex.model.name, ex.model.version):
        meta = None  # another version scored this card: say nothing of its missing inputs
    factors = [
        {
            "label": feature_label(c.feature, lang),
            "value": value_text(
                c.feature, ex.features.get(c.feature, c.value), units.get(c.feature, c.unit), lang
            ),
            "date": ex.dates.get(c.feature),
            "points": abs(c.delta_risk) * 100.0,
            "raises": c.delta_risk >= 0,
            # One absolute scale on every page: FACTOR_FULL_SCALE fills the bar.
            "width": max(1, min(100, round(100 * abs(c.delta_risk) / FACTOR_FULL_SCALE))),
            "beyond_scale": abs(c.delta_risk) > FACTOR_FULL_SCALE,
            "unlike_clinical": ex.unlike_clinical(c),
        }
        for c in ex.contributions
    ]
    data_rows: list[dict[str, Any]] = [
        {
            "label": feature_label(name, lang),
            "value": value_text(name, value, units.get(name, ex.units.get(name, "")), lang),
            "date": ex.dates.get(name),
        }
        for name, value in ex.features.items()
    ]
    # Inputs not recorded: shown, with what the model scored them as (never hidden).
    for name, scored_as in ex.missing.items():
        unit = units.get(name, "1")
        how = missing_how(meta, name) if meta is not None else "unmeasured"
        text = missing_text(name, scored_as, unit, lang, how)  # as on the card
        data_rows.append(
            {"label": feature_label(name, lang), "value": text, "date": None, "missing": True}
        )
    missing_note = (
        i18n.t(
            "card.ncd.missing.note",
            lang,
            fields=", ".join(feature_label(name, lang) for name in ex.missing),
        )
        if ex.missing
        else ""
    )
    chart = await run_in_threadpool(_who_grid, ex, runtime)
    # The headline's "WHO chart" number is the outlined cell's, as on the card; the
    # equation at the patient's exact values is shown beside it, named as such.
    who_cell = chart.patient() if chart is not None else None
    page = render_page(
        request,
        "explain_ncd.html",
        lang=lang,
        ex=ex,
        what_ifs=await run_in_threadpool(ex.what_ifs),
        factors=factors,
        support_reasons=support_text(ex.outside_support, ex.features, units or ex.units, lang),
        factor_scale=round(FACTOR_FULL_SCALE * 100),
        not_recorded=[feature_label(name, lang) for name in ex.missing],
        data_rows=data_rows,
        missing_note=missing_note,
        chart=chart,
        who_cell=who_cell,
        # A national recalibration by the country's name in the page's language.
        who_country=(
            country_name(ex.who.country_code, lang) if ex.who and ex.who.country_code else ""
        ),
        link=request.query_params,
        metrics=ex.model.metrics,
        title_key={"cvd": "ui.explain.ncd.title", "diabetes": "ui.explain.diabetes.title"}.get(
            ex.outcome, "ui.explain.title"
        ),
    )
    return Answer(page, "read")


def _not_found(request: Request) -> Answer:
    """404 for a link to nothing (purged, past retention): audited as refused."""
    return Answer(message_page(request, "ui.explain.not_found", 404), "refused", "not-found")


explain_ncd = endpoint("link", "ui-explain-ncd", _explain_ncd, refusal_page=refused_page)


# --- chest X-ray explanation -----------------------------------------------------------


def cxr_store(runtime: Runtime) -> Any | None:
    """The imaging result store (``runtime.imaging.store``), if imaging is on."""
    return getattr(runtime.imaging, "store", None)


async def _linked_read(request: Request, exchange: Exchange) -> tuple[Any, CxrResult] | Answer:
    """The read a signed link names, its facts on ``exchange`` (imaging's route rule),
    or the answer without it: 404 for an unknown read, 503 when imaging is off."""
    from serving.imaging.routes import found_read

    return await found_read(request, exchange, by_link=True)


def _unavailable(exchange: Exchange) -> Answer:
    """503: a stored read's maps or images could not be read; nothing half-shown."""
    from serving.imaging.routes import store_unavailable

    return store_unavailable(exchange)


def side_marker(study: StudyRef) -> tuple[str, str]:
    """The letter for the viewer's left of a frontal image, and where it comes from.

    DICOM PatientOrientation's first value is the patient direction along a row (left
    to right on screen): ``L`` means the patient's right is on the viewer's left (the
    standard display of a PA or AP chest), ``R`` a flipped image. Without it the
    standard convention is assumed, and the page says so.
    """
    along_row = (study.orientation or ("", ""))[0][:1]
    if along_row == "L":
        return "R", "dicom"
    if along_row == "R":
        return "L", "dicom"
    return "R", "convention"


def _study_when(study: StudyRef) -> str:
    """DICOM StudyDate (and StudyTime) as ``YYYY-MM-DD HH:MM``; "" when not given."""
    day = study.study_date or ""
    if len(day) != 8 or not day.isdigit():
        return ""
    text = f"{day[:4]}-{day[4:6]}-{day[6:]}"
    clock = (study.study_time or "").split(".", 1)[0]
    if len(clock) >= 4 and clock[:4].isdigit():
        text += f" {clock[:2]}:{clock[2:4]}"
    return text


async def _explain_cxr(request: Request, exchange: Exchange) -> Answer:
    """``GET /ui/explain/cxr/{result_id}``: the X-ray reader for a stored result.

    The page carries every label's map (0-1 at map resolution) as JSON data; the image
    comes from the signed, audited ``pixels`` (the original's values, windowed by the
    page) or, for reads stored before format 3, ``image.png`` (8-bit).
    """
    runtime = runtime_of(request)
    found = await _linked_read(request, exchange)
    if isinstance(found, Answer):
        return _not_found(request) if found.reason == "not-found" else found
    state, result = found
    # A stored read whose maps cannot be read raises: 503 (on_error), nothing half-shown.
    # Retention may have emptied the reader's copy (removed): the page says when and why.
    source, removed = await run_in_threadpool(state.store.kept_source, result.id)
    lang = language(request)
    left, marker_source = side_marker(result.study)
    maps = source.maps()
    pixels = source.pixels
    reader: dict[str, Any] = {
        "shown": result.heatmap_label,
        "rows": int(source.cam.shape[0]),
        "columns": int(source.cam.shape[1]),
        # Reads stored before per-label maps were kept: the shown map alone.
        "maps": maps or {result.heatmap_label: [round(float(v), 3) for v in source.cam.ravel()]},
        "names": {
            label: i18n.t(f"label.{label}", lang) for label in maps or [result.heatmap_label]
        },
    }
    if pixels is not None:
        reader["pixels"] = {
            "url": signed_link(runtime, f"/ui/explain/cxr/{result.id}/pixels"),
            "rows": int(pixels.values.shape[0]),
            "columns": int(pixels.values.shape[1]),
            "center": round(pixels.center, 2),
            "width": round(pixels.width, 2),
        }
    page = render_page(
        request,
        "explain_cxr.html",
        lang=lang,
        result=result,
        # The read says so itself when a synthetic-trained model made it.
        demo=result.advisory.startswith(DEMO_NOTE),
        score=score_text,
        study_when=_study_when(result.study),
        marker_left=left,
        marker_source=marker_source,
        reader_json=script_json(reader),
        heatmap=signed_link(runtime, f"/ui/explain/cxr/{result.id}/heatmap.png"),
        base_image=signed_link(runtime, f"/ui/explain/cxr/{result.id}/image.png"),
        has_values=pixels is not None,
        copy_removed=copy_removed_text(runtime, removed, lang) if removed else "",
        link=request.query_params,
    )
    return Answer(page, "read")


def copy_removed_text(runtime: Runtime, removed: datetime, lang: str) -> str:
    """Why a read's full-resolution image is gone and where to open it instead."""
    days = runtime.settings.imaging_pixels_days
    retention = (
        i18n.t("ui.explain.cxr.retention_days", lang, days=days)
        if days
        else i18n.t("ui.explain.cxr.retention_set", lang)
    )
    when = i18n.format_date(removed, lang)
    return i18n.t("ui.explain.cxr.copy_removed", lang, date=when, retention=retention)


explain_cxr = endpoint(
    "link", "ui-explain-cxr", _explain_cxr, on_error=_unavailable, refusal_page=refused_page
)


def _which(request: Request) -> str:
    return "heatmap" if request.url.path.endswith("/heatmap.png") else "image"


async def _cxr_png(request: Request, exchange: Exchange) -> Answer:
    """The overlay (``heatmap.png``) or display copy (``image.png``) of a stored result.

    Signed-link only, and audited as a read of the result like the page itself.
    """
    which = _which(request)
    found = await _linked_read(request, exchange)
    if isinstance(found, Answer):
        return found
    state, result = found
    png = await run_in_threadpool(getattr(state.store, which), result.id)
    # The read never changes; the link expires, so the browser keeps it privately.
    headers = {"Cache-Control": "private, max-age=3600", "ETag": f'"{result.id}-{which}"'}
    return Answer(Response(png, media_type="image/png", headers=headers), "read")


cxr_png = endpoint(
    "link", lambda request: f"ui-cxr-{_which(request)}", _cxr_png, on_error=_unavailable
)


async def _cxr_pixels(request: Request, exchange: Exchange) -> Answer:
    """``GET .../pixels``: a format-3 read's display values, little-endian uint16 rows,
    gzip-encoded (the page's JSON gives rows, columns and the default window).

    Signed-link only and audited as a read, like ``image.png``; 404 for a read stored
    before format 3 (its page loads ``image.png``); 410 with why (JSON ``message`` in
    the page's language) once the site's retention emptied them.
    """
    found = await _linked_read(request, exchange)
    if isinstance(found, Answer):
        return found
    state, result = found
    try:
        body = await run_in_threadpool(state.store.pixels, result.id)
    except KeyError:
        return Answer(Response(status_code=404), "refused", "no-display-values")
    except CopyRemoved as gone:
        runtime = runtime_of(request)
        answer = {
            "error": "image-not-kept",
            "removed": gone.removed.isoformat(timespec="seconds"),
            "retention_days": runtime.settings.imaging_pixels_days,
            "message": copy_removed_text(runtime, gone.removed, language(request)),
        }
        return Answer(JSONResponse(answer, status_code=410), "refused", "image-not-kept")
    headers = {
        "Cache-Control": "private, max-age=3600",
        "ETag": f'"{result.id}-pixels"',
        "Content-Encoding": "gzip",
    }
    return Answer(Response(body, media_type="application/octet-stream", headers=headers), "read")


cxr_pixels = endpoint("link", "ui-cxr-pixels", _cxr_pixels, on_error=_unavailable)


# --- model card --------------------------------------------------------------------------


# A model card's figures: plain PNG file names in the card's own directory, nothing else.
FIGURE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}\.png$")


def _loaded(runtime: Runtime, name: str, version: str) -> Any | None:
    """The stored model this service loaded under ``name`` ``version``, if any."""
    return next(
        (
            s
            for s in runtime.models.values()
            if s.metadata.name == name and s.metadata.version == version
        ),
        None,
    )


# The section headings training writes into a model card (training/ncd_card.py), by
# catalogue key: shown in the page's language; the text under them stays as written.
CARD_HEADINGS = (
    "intended_use",
    "outcome",
    "population",
    "features",
    "training",
    "performance",
    "evaluation",
    "decision_curve",
    "subgroups",
    "gates",
    "outputs",
    "export",
    "limitations",
    "provenance",
    "tripod",
)


def card_headings(lang: str, name: str) -> dict[str, str]:
    """English model-card heading -> the same heading in ``lang``."""
    key = "ui.model_card.heading."
    out = {i18n.t(key + k, "en"): i18n.t(key + k, lang) for k in CARD_HEADINGS}
    out[i18n.t(key + "model_card", "en", name=name)] = i18n.t(key + "model_card", lang, name=name)
    return out


async def model_card(request: Request) -> Response:
    """``GET /ui/models/{name}/{version}``: the card of a model this service loaded."""
    runtime = runtime_of(request)
    name, version = request.path_params["name"], request.path_params["version"]
    stored = _loaded(runtime, name, version)
    if stored is None:
        return message_page(request, "ui.explain.not_found", 404)
    cards = [stored.card_dir / n for n in ("model-card.md", "README.md")]
    found = next((c for c in cards if c.is_file()), None)
    text = found.read_text(encoding="utf-8") if found else ""
    return render_page(
        request,
        "model_card.html",
        meta_=stored.metadata,
        demo=trained_on_synthetic(stored.metadata),
        card_json=script_json(text),
        headings_json=script_json(card_headings(language(request), f"{name} {version}")),
        figures=f"/ui/models/{quote(name, safe='')}/{quote(version, safe='')}/figures/",
        metrics=headline_metrics(stored.metadata.metrics, limit=50),
    )


def _figure(card_dir: Path, file: str) -> bytes | None:
    """A figure's bytes: a regular PNG file directly in ``card_dir`` (no link, no path)."""
    if not FIGURE.match(file):
        return None
    path = card_dir / file
    if path.is_symlink() or not path.is_file() or path.resolve().parent != card_dir.resolve():
        return None
    data = path.read_bytes()
    return data if data.startswith(b"\x89PNG\r\n\x1a\n") else None


async def model_card_figure(request: Request) -> Response:
    """``GET /ui/models/{name}/{version}/figures/{file}``: a PNG figure of a model card."""
    p = request.path_params
    stored = _loaded(runtime_of(request), p["name"], p["version"])
    png = await run_in_threadpool(_figure, stored.card_dir, p["file"]) if stored else None
    if png is None:
        return Response(status_code=404)
    return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})
