"""Read and check a local calibration study (``tonle calibrate cxr STUDY.csv``).

One row per person screened. Columns (UTF-8 CSV with a header; unknown columns are
refused):

=================  ========  ===========================================================
column             needed    values
=================  ========  ===========================================================
``person_id``      yes       non-empty, at most 64 characters, unique in the file
``score``          one of    the CAD score, a number from 0 to 1
``image``          the two   a DICOM or PNG path (relative to the study file) to score
``reference``      yes       ``1`` TB confirmed, ``0`` not, empty: no confirmatory test
``age``            yes       years, 0 to 120
``sex``            yes       ``female``, ``male``, ``other``, ``unknown`` (or ``F``/``M``)
``hiv``            no        ``1``, ``0`` or empty (unknown)
``symptoms``       no        ``1``, ``0`` or empty (unknown)
``test_cost``      no        cost of this person's confirmatory test, >= 0; empty: the
                             ``--cost-per-test`` value
``sampling_weight`` no       for a person with a reference: 1 / the probability that
                             the study sent them for the test (>= 1); empty otherwise
=================  ========  ===========================================================

Any bad value raises :class:`StudyError` naming the row (as a spreadsheet numbers it:
the header is row 1, so it is also the file's line) and the field.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

__all__ = [
    "COLUMNS",
    "MAX_STUDY_BYTES",
    "SEXES",
    "Study",
    "StudyError",
    "read_study",
]

COLUMNS = (
    "person_id",
    "score",
    "image",
    "reference",
    "age",
    "sex",
    "hiv",
    "symptoms",
    "test_cost",
    "sampling_weight",
)
_REQUIRED = ("person_id", "reference", "age", "sex")
MAX_STUDY_BYTES = 256 * 1024**2
SEXES = ("female", "male", "other", "unknown")
_SEX_ALIASES = {"f": "female", "m": "male"}
_MAX_ID = 64


class StudyError(ValueError):
    """A study file that cannot be used, with where the problem is.

    Attributes:
        line: the row as a spreadsheet numbers it (header = 1; the file's line), or None
            for a whole-file problem.
        field: the column, or None.
    """

    def __init__(self, message: str, line: int | None = None, field: str | None = None) -> None:
        where = [f"row {line}"] if line is not None else []
        if field is not None:
            where.append(f"field {field!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)
        self.line = line
        self.field = field


@dataclass(frozen=True)
class Study:
    """A checked study: one entry per person, in file order.

    Attributes:
        path: the study file.
        sha256: hex digest of the file's bytes (recorded with any threshold chosen on it).
        lines: file line of each person (for messages).
        person_id: identifiers.
        score: CAD score in [0, 1]; NaN until images are scored (see ``image``).
        reference: 1.0, 0.0, or NaN (no confirmatory test).
        age: years.
        sex: one of :data:`SEXES`.
        hiv: 1.0, 0.0 or NaN; None when the column is absent.
        symptoms: 1.0, 0.0 or NaN; None when the column is absent.
        test_cost: per-person cost (NaN: use the default); None when the column is absent.
        sampling_weight: inverse sampling probability for people with a reference;
            None when the column is absent.
        image: image paths (resolved) when the study gives images instead of scores.
    """

    path: Path
    sha256: str
    lines: np.ndarray
    person_id: list[str]
    score: np.ndarray
    reference: np.ndarray
    age: np.ndarray
    sex: np.ndarray
    hiv: np.ndarray | None
    symptoms: np.ndarray | None
    test_cost: np.ndarray | None
    sampling_weight: np.ndarray | None
    image: list[Path] | None

    @property
    def screened(self) -> int:
        """Number of people screened (rows)."""
        return len(self.person_id)

    @property
    def verified(self) -> np.ndarray:
        """Boolean mask of people with a reference result."""
        return np.asarray(~np.isnan(self.reference))

    def with_scores(self, scores: np.ndarray) -> Study:
        """This study with ``score`` filled in (e.g. from scoring its images)."""
        scores = np.asarray(scores, dtype=np.float64)
        if scores.shape != self.score.shape:
            raise ValueError(f"{scores.shape[0]} scores for {self.screened} people")
        return replace(self, score=scores)


def _number(text: str, line: int, field: str, low: float, high: float) -> float:
    try:
        value = float(text)
    except ValueError:
        raise StudyError(
            f"{text[:40]!r} is not a number; allowed: {low:g} to {high:g}", line, field
        ) from None
    if not math.isfinite(value) or not low <= value <= high:
        raise StudyError(
            f"{text[:40]!r} is out of range; allowed: {low:g} to {high:g}", line, field
        )
    return value


def _flag(text: str, line: int, field: str, *, empty_ok: bool) -> float:
    if text == "1":
        return 1.0
    if text == "0":
        return 0.0
    if text == "" and empty_ok:
        return math.nan
    allowed = "1, 0 or empty" if empty_ok else "1 or 0"
    raise StudyError(f"{text[:40]!r} is not allowed; allowed: {allowed}", line, field)


def _header(row: list[str]) -> list[str]:
    names = [name.strip() for name in row]
    seen: set[str] = set()
    for name in names:
        if name not in COLUMNS:
            raise StudyError(
                f"unknown column {name[:40]!r}; allowed: {', '.join(COLUMNS)}", 1, name[:40]
            )
        if name in seen:
            raise StudyError(f"column {name!r} appears twice", 1, name)
        seen.add(name)
    missing = [name for name in _REQUIRED if name not in seen]
    if missing:
        raise StudyError(f"missing required column(s) {', '.join(missing)}", 1)
    if ("score" in seen) == ("image" in seen):
        raise StudyError("give exactly one of the columns 'score' and 'image'", 1)
    return names


def read_study(path: Path) -> Study:
    """Read and check a study CSV.

    Args:
        path: the study file.

    Returns:
        The checked study.

    Raises:
        StudyError: the file is unreadable, too large, empty, or any value is invalid.
    """
    try:
        if path.stat().st_size > MAX_STUDY_BYTES:
            raise StudyError(f"{path.name} is larger than {MAX_STUDY_BYTES} bytes")
        data = path.read_bytes()
    except OSError as exc:
        raise StudyError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise StudyError(f"{path.name} is not UTF-8 (byte {exc.start})") from None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
        if not header:
            raise StudyError(f"{path.name} is empty (no header row)")
        names = _header(header)
        rows = [(reader.line_num, row) for row in reader if row]
    except csv.Error as exc:
        raise StudyError(f"not valid CSV: {exc}", reader.line_num) from None
    if not rows:
        raise StudyError(f"{path.name} has a header and no people")
    return _parse(path, hashlib.sha256(data).hexdigest(), names, rows)


def _parse(path: Path, sha256: str, names: list[str], rows: list[tuple[int, list[str]]]) -> Study:
    present = set(names)
    n = len(rows)
    lines = np.empty(n, dtype=np.int64)
    ids: list[str] = []
    first_line: dict[str, int] = {}
    cols = {name: np.full(n, math.nan) for name in ("score", "reference", "age")}
    optional = {
        name: np.full(n, math.nan)
        for name in ("hiv", "symptoms", "test_cost", "sampling_weight")
        if name in present
    }
    sex = np.empty(n, dtype=object)
    images: list[Path] = []
    for i, (line, row) in enumerate(rows):
        if len(row) != len(names):
            raise StudyError(f"{len(row)} fields; the header has {len(names)}", line)
        value = {name: field.strip() for name, field in zip(names, row, strict=True)}
        lines[i] = line
        pid = value["person_id"]
        if not pid or len(pid) > _MAX_ID or not pid.isprintable():
            raise StudyError(
                f"must be 1 to {_MAX_ID} printable characters, got {pid[:40]!r}",
                line,
                "person_id",
            )
        if pid in first_line:
            raise StudyError(f"{pid!r} already appears on row {first_line[pid]}", line, "person_id")
        first_line[pid] = line
        ids.append(pid)
        if "score" in present:
            cols["score"][i] = _number(value["score"], line, "score", 0.0, 1.0)
        else:
            images.append(_image(path, value["image"], line))
        cols["reference"][i] = _flag(value["reference"], line, "reference", empty_ok=True)
        cols["age"][i] = _number(value["age"], line, "age", 0.0, 120.0)
        sex[i] = _sex(value["sex"], line)
        for name in ("hiv", "symptoms"):
            if name in optional:
                optional[name][i] = _flag(value[name], line, name, empty_ok=True)
        if "test_cost" in optional and value["test_cost"]:
            optional["test_cost"][i] = _number(value["test_cost"], line, "test_cost", 0.0, 1e12)
        if "sampling_weight" in optional:
            optional["sampling_weight"][i] = _weight(
                value["sampling_weight"], line, verified=not math.isnan(cols["reference"][i])
            )
    if np.isnan(cols["reference"]).all():
        raise StudyError("no person has a reference result (column 'reference' is all empty)")
    return Study(
        path=path,
        sha256=sha256,
        lines=lines,
        person_id=ids,
        score=cols["score"],
        reference=cols["reference"],
        age=cols["age"],
        sex=sex,
        hiv=optional.get("hiv"),
        symptoms=optional.get("symptoms"),
        test_cost=optional.get("test_cost"),
        sampling_weight=optional.get("sampling_weight"),
        image=images if "image" in present else None,
    )


def _sex(text: str, line: int) -> str:
    value = text.lower()
    value = _SEX_ALIASES.get(value, value)
    if value not in SEXES:
        raise StudyError(
            f"{text[:40]!r} is not allowed; allowed: {', '.join(SEXES)}, F, M", line, "sex"
        )
    return value


def _weight(text: str, line: int, *, verified: bool) -> float:
    if not verified:
        if text:
            raise StudyError(
                "a person without a reference result has no sampling weight; leave it empty",
                line,
                "sampling_weight",
            )
        return math.nan
    if not text:
        raise StudyError(
            "a person with a reference result needs a sampling weight (>= 1)",
            line,
            "sampling_weight",
        )
    return _number(text, line, "sampling_weight", 1.0, 1e9)


def _image(study: Path, text: str, line: int) -> Path:
    if not text:
        raise StudyError("empty; give the image file's path", line, "image")
    image = Path(text)
    return image if image.is_absolute() else study.parent / image
