"""Settings as an operator writes them (found from outside: misspelt names ignored in silence, a password in a
refusal, inf taken for a number of days, an unprefixed variable read)."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from nbrelay.config import Settings, hide_password, settings_problem, unknown_names
from tests.notify.pki import PrivateCa


def test_a_misspelt_or_unknown_name_is_said_with_the_setting_it_may_mean() -> None:
    lines = unknown_names(
        {"NBRELAY_DATABSE_URL": "postgresql://db/x", "NBRELAY_WORKRS": "2", "NBRELAY_FROBNICATE": "1", "HOME": "/"}
    )
    assert lines == [
        "NBRELAY_DATABSE_URL is no setting of nbrelay and is ignored (did you mean NBRELAY_DATABASE_URL?)",
        "NBRELAY_FROBNICATE is no setting of nbrelay and is ignored",
        "NBRELAY_WORKRS is no setting of nbrelay and is ignored (did you mean NBRELAY_WORKERS?)",
    ]
    # What the CLI and the worker processes read are no mistakes.
    assert unknown_names({"NBRELAY_SERVER": "x", "NBRELAY_TOKEN": "t", "NBRELAY_REPORTS_DIR": "/r"}) == []


def test_an_empty_variable_means_the_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NBRELAY_BROKER_URL", "")
    monkeypatch.setenv("NBRELAY_DEFAULT_TIMEOUT_S", "")
    settings = Settings(data_dir=tmp_path)
    assert settings.broker_url == Settings.model_fields["broker_url"].default
    assert settings.default_timeout_s is None


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e400"])
def test_no_setting_takes_infinity_or_nan(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("NBRELAY_REPORT_KEEP_DAYS", value)
    with pytest.raises(ValidationError) as refused:
        Settings()
    assert settings_problem(refused.value) == "NBRELAY_REPORT_KEEP_DAYS: Input should be a finite number"


def test_a_refused_url_is_said_without_its_password() -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(database_url="mysql://nbrelay:S3cretDbPw@db.internal/nbrelay")
    said = settings_problem(refused.value)
    assert "S3cretDbPw" not in said and "mysql://nbrelay:***@db.internal/nbrelay" in said
    assert hide_password("amqp://guest:pa:ss@mq:5672//") == "amqp://guest:***@mq:5672//"
    assert hide_password("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_postgres_is_taken_for_postgresql() -> None:
    assert Settings(database_url="postgres://u@db/x").database_url == "postgresql://u@db/x"


def test_only_the_prefixed_name_sets_the_reports_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REPORTS_DIR", str(tmp_path / "unprefixed"))
    monkeypatch.setenv("REPORTS_FOLDER", str(tmp_path / "unprefixed"))
    assert Settings(data_dir=tmp_path).reports_dir == tmp_path / "reports"
    monkeypatch.setenv("NBRELAY_REPORTS_DIR", str(tmp_path / "shared"))
    assert Settings(data_dir=tmp_path).reports_dir == tmp_path / "shared"


@pytest.mark.parametrize(
    ("settings", "said"),
    [
        ({"database_url": "sqlite:///x.db", "broker_url": "redis://r:6379/0"}, "share one job database"),
        ({"database_url": "postgresql://u@db/x", "broker_url": "sql://"}, "the celery executor needs a broker"),
    ],
)
def test_the_celery_executor_is_refused_at_start_without_what_it_needs(settings: dict[str, str], said: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(executor="celery", **settings)
    assert said in settings_problem(refused.value) and "NBRELAY_:" not in settings_problem(refused.value)
    Settings(executor="celery", database_url="postgresql://u@db/x", broker_url="redis://r:6379/0")


@pytest.mark.parametrize(
    ("content", "said"),
    [
        (None, "does not exist"),
        ("<a folder>", "is not a file"),
        ("", "holds no certificate"),
        ("the company's CA, to be pasted here\n", "holds no certificate"),
        (
            "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
            "holds a certificate that is not valid",
        ),
    ],
)
def test_a_notify_ca_file_without_a_certificate_is_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, content: str | None, said: str
) -> None:
    ca_file = tmp_path / "company-ca.pem"
    if content == "<a folder>":
        ca_file.mkdir()
    elif content is not None:
        ca_file.write_text(content)
    monkeypatch.setenv("NBRELAY_NOTIFY_CA_FILE", str(ca_file))
    with pytest.raises(ValidationError) as refused:
        Settings(data_dir=tmp_path)
    problem = settings_problem(refused.value)
    assert problem.startswith(f"NBRELAY_NOTIFY_CA_FILE='{ca_file}' {said}"), problem
    assert "PEM file of CA certificates" in problem and "\n" not in problem
    assert refused.value.errors()[0]["loc"] == ("notify_ca_file",)


def test_a_notify_ca_file_of_certificates_is_taken_and_unset_means_none(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ca = PrivateCa.make(tmp_path / "ca", "nbrelay test config CA")
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(ca.ca.read_text() + ca.cert.read_text())  # several certificates in one file
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NBRELAY_NOTIFY_CA_FILE", "bundle.pem")  # relative: to the directory it starts in
    assert Settings(data_dir=tmp_path).notify_ca_file == bundle
    monkeypatch.setenv("NBRELAY_NOTIFY_CA_FILE", "")
    assert Settings(data_dir=tmp_path).notify_ca_file is None
