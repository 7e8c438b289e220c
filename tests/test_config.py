"""gateway.yaml: one-line errors that name the key path; exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import run_cli
from gateway.config import load_settings, parse_duration, parse_size
from gateway.errors import ConfigError


def _check(tmp_path: Path, data: object, env: dict[str, str] | None = None) -> tuple[int, str]:
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(yaml.safe_dump(data) if not isinstance(data, str) else data)
    r = run_cli("--config", str(cfg), "config", "check", cwd=tmp_path, env=env)
    return r.returncode, r.stderr.decode().strip()


def test_wrong_key_names_the_key_path(tmp_path: Path) -> None:
    code, err = _check(tmp_path, {"smtp": {"listen": "0.0.0.0:2525", "hostnme": "x"}})
    assert code == 2
    assert err.count("\n") == 0
    assert err == "error: smtp.hostnme: unknown key"


def test_wrong_type_names_the_key_path(tmp_path: Path) -> None:
    code, err = _check(tmp_path, {"exports": [{"name": "a", "type": "folder", "path": "/x"},
                                              {"name": "b", "type": "webdav", "url": "ftp://nas"}]})
    assert code == 2 and err.count("\n") == 0
    assert err == "error: exports[1].url: must start with http:// or https://"
    code, err = _check(tmp_path, {"smtp": {"max_message_size": "huge"}})
    assert code == 2 and "smtp.max_message_size" in err and "50MB" in err
    code, err = _check(tmp_path, {"unmatched": {"smtp": "maybe"}})
    assert code == 2 and "unmatched.smtp" in err and "recognize" in err


def test_missing_secret_file_names_the_key_path(tmp_path: Path) -> None:
    code, err = _check(tmp_path, {"exports": [{"name": "cloud", "type": "webdav", "url": "https://nas/dav",
                                               "username": "me", "password_file": str(tmp_path / "nope")}]})
    assert code == 2 and err.count("\n") == 0
    assert err.startswith("error: exports[0].password_file: cannot read")


def test_missing_environment_variable(tmp_path: Path) -> None:
    code, err = _check(tmp_path, "web:\n  password: ${ADMIN_PW_NOT_SET}\n")
    assert code == 2 and err == "error: web.password: environment variable ADMIN_PW_NOT_SET is not set"
    code, out = _check(tmp_path, "web:\n  password: ${ADMIN_PW}\n", env={"ADMIN_PW": "s3cret"})
    assert code == 0


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    code, err = _check(tmp_path, "smtp:\n  listen: [unclosed\n")
    assert code == 2 and "gateway.yaml:" in err and "not valid YAML" in err


def test_password_file_is_read(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2\n")
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(yaml.safe_dump({"web": {"password_file": str(secret)}}))
    assert load_settings(cfg).web.password == "hunter2"


def test_defaults_without_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GATEWAY_CONFIG", raising=False)
    s = load_settings()
    assert s.source_path is None
    assert s.data_dir == tmp_path / "data" and s.rules_dir == tmp_path / "rules"
    assert s.smtp.host_port == ("127.0.0.1", 2525) and s.web.host_port == ("127.0.0.1", 8080)  # this machine only
    assert "invoices@localhost" in [a.address for a in s.smtp.addresses]
    assert s.exports[0].type == "folder" and s.exports[0].path == tmp_path / "exports"


def test_explicit_missing_config_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_settings(tmp_path / "absent.yaml")


def test_sizes_and_durations() -> None:
    assert parse_size("50MB") == 50 * 1024 * 1024 and parse_size("512k") == 512 * 1024 and parse_size(10) == 10
    assert parse_duration("15m") == 900 and parse_duration("1h") == 3600 and parse_duration(5) == 5
    with pytest.raises(ValueError):
        parse_duration("soon")


def test_relative_secret_files_are_relative_to_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf_dir = tmp_path / "conf"
    (conf_dir / "secrets").mkdir(parents=True)
    (conf_dir / "secrets" / "web").write_text("s3cret\n")
    cfg = conf_dir / "gateway.yaml"
    cfg.write_text(yaml.safe_dump({"web": {"password_file": "secrets/web"}}))
    monkeypatch.chdir(tmp_path)  # not where the config is
    assert load_settings(cfg).web.password == "s3cret"
