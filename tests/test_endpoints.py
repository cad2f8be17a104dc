"""Where the CLI finds Temporal's HTTP API (executor.service.endpoints): the setting, else the
dev server's record, and never a record that is not a local dev server's."""

from __future__ import annotations

from pathlib import Path

import pytest

from executor import Settings
from executor.errors import SettingsInvalid
from executor.service.endpoints import DEV_RECORD, http_address, remove_dev_record, write_dev_record
from executor.service.temporal_http import parse_timestamp


def _record(home: Path, **changes: str | None) -> None:
    fields: dict[str, str | None] = {
        "address": "127.0.0.1:7233",
        "namespace": "default",
        "http_api": "http://127.0.0.1:7243",
        "ui_api": "http://127.0.0.1:8233",
    }
    fields.update(changes)
    write_dev_record(
        home,
        address=str(fields["address"]),
        namespace=str(fields["namespace"]),
        http_api=str(fields["http_api"]),
        ui_api=fields["ui_api"],
    )


def test_the_setting_wins_unless_the_command_names_another_server(tmp_path: Path) -> None:
    _record(tmp_path)
    settings = Settings(home=tmp_path, http_address="https://temporal.example:7243")
    assert http_address(settings) == "https://temporal.example:7243"
    # --address names some Temporal: the configured HTTP API may be another's; the record is not its.
    elsewhere = Settings(home=tmp_path, address="temporal.example:7233", http_address="https://temporal.example:7243")
    assert http_address(elsewhere, address_given=True) is None
    assert (
        http_address(Settings(home=tmp_path, address="127.0.0.1:7233", http_address="http://x:1"), address_given=True)
        == "http://127.0.0.1:8233"
    )


def test_the_dev_server_record_serves_its_own_address_and_namespace(tmp_path: Path) -> None:
    _record(tmp_path)
    assert http_address(Settings(home=tmp_path)) == "http://127.0.0.1:8233"  # localhost:7233 is 127.0.0.1:7233
    assert http_address(Settings(home=tmp_path, address="127.0.0.1:7300")) is None
    assert http_address(Settings(home=tmp_path, namespace="prod")) is None
    _record(tmp_path, ui_api=None)  # a headless dev server: its frontend's HTTP port
    assert http_address(Settings(home=tmp_path)) == "http://127.0.0.1:7243"


def test_a_record_naming_another_machine_is_ignored(tmp_path: Path) -> None:
    """It would be sent DURAPLAN_API_KEY: a dev server's record only ever names this machine."""
    _record(tmp_path, ui_api="http://attacker.example:8233")
    assert http_address(Settings(home=tmp_path, api_key="secret")) is None
    _record(tmp_path, address="temporal.example:7233")
    assert http_address(Settings(home=tmp_path, address="temporal.example:7233")) is None
    (tmp_path / DEV_RECORD).write_text("not json")
    assert http_address(Settings(home=tmp_path)) is None


def test_the_record_goes_with_its_server(tmp_path: Path) -> None:
    _record(tmp_path)
    remove_dev_record(tmp_path, "127.0.0.1:9999")  # another server's stop leaves it
    assert (tmp_path / DEV_RECORD).exists()
    remove_dev_record(tmp_path, "127.0.0.1:7233")
    assert not (tmp_path / DEV_RECORD).exists()


def test_the_http_address_must_be_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DURAPLAN_HTTP_ADDRESS", "user:secret@temporal:7243")
    with pytest.raises(SettingsInvalid) as caught:
        Settings.from_env()
    assert "secret" not in str(caught.value)
    monkeypatch.setenv("DURAPLAN_HTTP_ADDRESS", "http://127.0.0.1:8233/")
    assert Settings.from_env().http_address == "http://127.0.0.1:8233"


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("2026-11-30T23:22:08.112379585Z", "2026-11-30T23:22:08.112379+00:00"),  # nanoseconds truncated
        ("2026-11-30T23:22:08.100Z", "2026-11-30T23:22:08.100000+00:00"),
        ("2026-11-30T23:22:08Z", "2026-11-30T23:22:08+00:00"),
        (None, None),
    ],
)
def test_timestamps_read_as_the_sdk_shows_them(text: str | None, shown: str | None) -> None:
    assert parse_timestamp(text) == shown
