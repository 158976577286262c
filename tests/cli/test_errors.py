"""What a new operator gets wrong first ends in one ``error:`` line and a documented
exit code (cli/console.py), never a traceback: a mistyped database URL, a file that is
not a backup, an output path under a file, a misspelt model, an empty or BOM/CRLF CSV."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from cli import app
from cli.console import EXIT_BAD_ARTIFACT, EXIT_BAD_INPUT, EXIT_FAILED
from serving.audit import AuditStore

runner = CliRunner()


def _error(result: Result, code: int) -> str:
    """The one ``error:`` line of a run that stopped cleanly with ``code``."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # no traceback
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert lines, result.output
    assert lines[-1].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[-1]


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    AuditStore.open(url).close()
    return url


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "a-file"
    path.write_text("not a folder\n", encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "args",
    [
        ["db", "upgrade"],
        ["apikey", "list"],
        ["db", "backup", "x.dump"],
        ["audit", "export", "-o", "x.ndjson"],
    ],
)
def test_a_database_url_that_is_no_url_is_named_not_echoed(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    bad = "postgres://tonle:s3cret@db:5432:5432/tonle"  # two ports: not parseable
    line = _error(runner.invoke(app, [*args, "--database-url", bad]), EXIT_BAD_INPUT)
    assert "--database-url is not a SQLAlchemy URL" in line
    assert "s3cret" not in line
    monkeypatch.setenv("TONLE_DATABASE_URL", bad)
    line = _error(runner.invoke(app, args), EXIT_BAD_INPUT)
    assert "TONLE_DATABASE_URL is not a SQLAlchemy URL" in line


def test_restore_refuses_a_file_that_is_not_a_tonle_backup(tmp_path: Path) -> None:
    target = f"sqlite:///{tmp_path / 'restored.db'}"
    garbage = tmp_path / "garbage.dump"
    garbage.write_bytes(bytes(range(256)) * 8)
    line = _error(
        runner.invoke(app, ["db", "restore", str(garbage), "--database-url", target]),
        EXIT_BAD_INPUT,
    )
    assert "is not a SQLite backup" in line
    empty = tmp_path / "empty.dump"  # SQLite reads an empty file as an empty database
    empty.touch()
    line = _error(
        runner.invoke(app, ["db", "restore", str(empty), "--database-url", target]),
        EXIT_BAD_INPUT,
    )
    assert "holds no Tonle audit database" in line
    assert not (tmp_path / "restored.db").exists()


def test_restore_still_takes_a_backup(db_url: str, tmp_path: Path) -> None:
    backup = tmp_path / "audit.dump"
    assert (
        runner.invoke(app, ["db", "backup", str(backup), "--database-url", db_url]).exit_code == 0
    )
    target = f"sqlite:///{tmp_path / 'restored.db'}"
    done = runner.invoke(app, ["db", "restore", str(backup), "--database-url", target])
    assert done.exit_code == 0, done.output
    assert "restored 0 audit row(s)" in done.output


@pytest.mark.parametrize(
    "args",
    [
        ["audit", "export", "-o", "{file}/audit.ndjson"],
        ["monitor", "report", "--since", "2026-11-30", "-o", "{file}/sub/report.html"],
    ],
)
def test_an_output_path_under_a_file_is_one_line(
    args: list[str], db_url: str, a_file: Path
) -> None:
    args = [arg.replace("{file}", str(a_file)) for arg in args]
    line = _error(runner.invoke(app, [*args, "--database-url", db_url]), EXIT_FAILED)
    assert f"cannot use {a_file}" in line


def test_database_commands_print_no_alembic_set_up_lines(db_url: str) -> None:
    result = runner.invoke(app, ["db", "upgrade", "--database-url", db_url])
    assert result.exit_code == 0, result.output
    assert "alembic" not in result.output


def test_a_long_error_is_not_wrapped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    line = _error(
        runner.invoke(app, ["audit", "export", "-o", "x", "--since", "the first of January"]),
        EXIT_BAD_INPUT,
    )
    assert line.endswith("2026-01-31T08:00:00+07:00)")


@pytest.mark.parametrize("tag", ["Bad Tag", "bad tag::", "cvd risk:1.0.0"])
def test_a_tag_that_cannot_be_one_is_an_artifact_not_found(
    tag: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TONLE_MODEL_STORE", str(tmp_path / "store"))
    for command in ("show", "verify"):
        line = _error(runner.invoke(app, ["models", command, tag]), EXIT_BAD_ARTIFACT)
        assert "models in the store: none" in line


def _outcomes(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.replace("\n", "\r\n").encode(encoding))
    return path


def test_outcomes_with_a_header_and_no_rows_are_refused(db_url: str, tmp_path: Path) -> None:
    header_only = _outcomes(tmp_path / "x.csv", "patient_id,date,result\n")
    args = ["monitor", "outcomes", str(header_only), "--tenant", "site-a"]
    result = runner.invoke(app, [*args, "-o", str(tmp_path / "out"), "--database-url", db_url])
    assert "holds no outcomes" in _error(result, EXIT_BAD_INPUT)
    assert not (tmp_path / "out").exists()


def test_outcomes_with_a_bom_and_windows_line_ends_are_read(db_url: str, tmp_path: Path) -> None:
    csv = _outcomes(
        tmp_path / "x.csv", "patient_id,date,result\nP1,2026-11-20,positive\n", "utf-8-sig"
    )
    result = runner.invoke(
        app,
        ["monitor", "outcomes", str(csv), "--tenant", "site-a", "-o", str(tmp_path / "out"),
         "--database-url", db_url],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "0 of 1 outcomes joined" in result.output


@pytest.mark.parametrize(
    "command",
    [["score", "who-cvd-lba", "{data}", "-o", "{out}"],
     ["evaluate", "--data", "{data}", "--country", "KHM", "-o", "{out}", "who-cvd-lba"]],
)  # fmt: skip
def test_a_misspelt_who_chart_is_named_right(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    pytest.importorskip("training")
    monkeypatch.setenv("TONLE_MODEL_STORE", str(tmp_path / "store"))
    data = _outcomes(tmp_path / "p.csv", "patient_id,age,sex,smoking,sbp,total_chol,diabetes\n")
    args = [a.format(data=data, out=tmp_path / "out") for a in command]
    line = _error(runner.invoke(app, args), EXIT_BAD_ARTIFACT)
    assert "who-cvd-lab and who-cvd-nonlab" in line


@pytest.mark.parametrize(
    ("command", "data", "written", "lines"),
    [
        (["score", "who-cvd-lab", "--country", "KHM"],
         "patient_id,age,sex,smoking,sbp,total_chol,diabetes\np1,60,male,0,150,6.0,0\n",
         "r.csv", 2),
        (["calibrate", "cxr", "--thresholds", "0.2,0.6"],
         "person_id,score,reference,age,sex\np1,0.9,1,60,M\np2,0.1,0,30,F\np3,0.5,,40,F\n",
         "calib/thresholds.csv", 3),
    ],
)  # fmt: skip
def test_a_bom_and_crlf_file_is_read_and_a_bad_output_named(
    tmp_path: Path, a_file: Path, command: list[str], data: str, written: str, lines: int
) -> None:
    pytest.importorskip("training")
    path = _outcomes(tmp_path / "in.csv", data, "utf-8-sig")
    args = [*command[:2], str(path), *command[2:]]
    output = written.split("/")[0]
    line = _error(runner.invoke(app, [*args, "-o", str(a_file / output)]), EXIT_FAILED)
    assert f"cannot use {a_file}" in line
    done = runner.invoke(app, [*args, "-o", str(tmp_path / output)])  # BOM + CRLF read
    assert done.exit_code == 0, done.output
    assert (tmp_path / written).read_text(encoding="utf-8").count("\n") == lines


@pytest.mark.parametrize(
    ("tenant", "name"), [("", "lab"), (" ", "lab"), ("site-a ", "lab"), ("site-a", ""),
                         ("x" * 129, "lab"), ("site\na", "lab")]
)  # fmt: skip
def test_an_api_key_needs_a_tenant_and_a_name(db_url: str, tenant: str, name: str) -> None:
    """An empty tenant is no tenant: tenant-less callers' stored reads are filed under ""."""
    args = ["apikey", "create", "--tenant", tenant, "--name", name, "--database-url", db_url]
    assert "1-128 printable characters" in _error(runner.invoke(app, args), EXIT_BAD_INPUT)
    store = AuditStore.open(db_url)
    try:
        with pytest.raises(ValueError, match="printable"):
            store.create_api_key(tenant, name)
        assert store.list_api_keys() == []
    finally:
        store.close()


def test_evaluate_names_an_empty_cohort(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("training")
    monkeypatch.setenv("TONLE_MODEL_STORE", str(tmp_path / "store"))
    header = _outcomes(tmp_path / "c.csv", "patient_id,age,sex,smoking,sbp,total_chol,diabetes\n")
    args = ["evaluate", "--data", str(header), "--country", "KHM", "-o", str(tmp_path / "ev")]
    line = _error(runner.invoke(app, [*args, "who-cvd-lab"]), EXIT_BAD_INPUT)
    assert "no rows left" in line
    assert "train" not in line  # evaluating, not training


def test_outcomes_saved_as_windows_1252_are_named_as_not_utf8(db_url: str, tmp_path: Path) -> None:
    csv = _outcomes(
        tmp_path / "x.csv",
        "patient_id,date,result,site\nP1,2026-11-20,positive,Tbong Khmum é\n",
        "cp1252",
    )
    args = ["monitor", "outcomes", str(csv), "--tenant", "site-a", "-o", str(tmp_path / "o")]
    line = _error(runner.invoke(app, [*args, "--database-url", db_url]), EXIT_BAD_INPUT)
    assert "is not UTF-8 text" in line
    args = ["data", "from-feedback", "-o", str(tmp_path / "fb.csv"), "--outcomes", str(csv)]
    line = _error(
        runner.invoke(app, [*args, "--tenant", "site-a", "--database-url", db_url]), EXIT_BAD_INPUT
    )
    assert "is not UTF-8 text" in line


def test_import_cxr_names_the_missing_labels_file(tmp_path: Path) -> None:
    pytest.importorskip("training")
    args = ["data", "import-cxr", "folder", str(tmp_path / "none"), str(tmp_path / "out")]
    line = _error(runner.invoke(app, args), EXIT_BAD_INPUT)
    assert line == f"error: {tmp_path / 'none' / 'labels.csv'}: No such file or directory"


def test_an_unreachable_database_says_why_without_the_password(tmp_path: Path) -> None:
    from tests.serving.service_process import free_port

    url = f"postgresql+psycopg://tonle:s3cret-pw@127.0.0.1:{free_port()}/tonle"
    line = _error(runner.invoke(app, ["db", "upgrade", "--database-url", url]), EXIT_FAILED)
    assert "audit database unavailable" in line
    assert "Connection refused" in line
    assert "s3cret-pw" not in line


def test_audit_export_refuses_an_empty_period(db_url: str, tmp_path: Path) -> None:
    args = ["audit", "export", "-o", str(tmp_path / "a.ndjson"), "--database-url", db_url]
    line = _error(runner.invoke(app, [*args, "--since", "2026-12-01", "--until", "2026-11-01"]), 2)
    assert "--until must be after --since" in line
    assert not (tmp_path / "a.ndjson").exists()


def test_backup_into_a_missing_folder_is_refused(db_url: str, tmp_path: Path) -> None:
    target = tmp_path / "no-such-folder" / "audit.dump"
    args = ["db", "backup", str(target), "--database-url", db_url]
    assert "is not a folder" in _error(runner.invoke(app, args), EXIT_BAD_INPUT)
