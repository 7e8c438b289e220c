"""gateway.yaml: one-line errors that name the key path; exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import free_port, run_cli
from gateway.config import load_settings, parse_duration, parse_settings, parse_size
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
    assert err.startswith("error: smtp.hostnme: unknown key; did you mean 'hostname'? allowed: enabled, listen, ")


def _error(data: dict[str, object]) -> str:
    """The one-line error of a gateway.yaml mapping (in-process: the CLI prints it after "error: ")."""
    with pytest.raises(ConfigError) as info:
        parse_settings(data)
    return str(info.value)


def test_unknown_key_lists_the_allowed_keys_and_the_closest(tmp_path: Path) -> None:
    """As the rules checker does: the keys allowed where the typo is, and the one meant."""
    code, err = _check(tmp_path, {"smtp": {"lisen": "0.0.0.0:2525"}})
    assert code == 2 and err.count("\n") == 0
    assert err.startswith("error: smtp.lisen: unknown key; did you mean 'listen'? allowed: ")
    allowed = err.split("allowed: ", 1)[1].split(", ")
    assert {"listen", "hostname", "tls", "auth", "limits", "addresses"} <= set(allowed)
    # deeper, inside a list, and where nothing is close
    err = _error({"exports": [{"name": "a", "type": "folder", "path": "/x", "fitler": {}}]})
    assert err.startswith("exports[0].fitler: unknown key; did you mean 'filter'? allowed: name, type")
    assert _error({"smtp": {"limits": {"zzz": 1}}}).startswith("smtp.limits.zzz: unknown key; allowed: connections_per_ip, ")
    assert "did you mean 'import'?" in _error({"unmatched": {"imporrt": "keep"}})  # the alias, not the Python name


def test_listen_port_out_of_range_fails_config_check(tmp_path: Path) -> None:
    code, err = _check(tmp_path, {"smtp": {"listen": "127.0.0.1:80800"}})
    assert code == 2 and err.count("\n") == 0
    assert err.startswith("error: smtp.listen: port 80800 in '127.0.0.1:80800' is out of range; a port is 1-65535")


@pytest.mark.parametrize(("cfg", "key", "shown"), [
    ({"smtp": {"listen": "127.0.0.1:0"}}, "smtp.listen", "port 0"),
    ({"web": {"listen": "0.0.0.0:65536"}}, "web.listen", "port 65536"),
    ({"web": {"listen": "0.0.0.0:http"}}, "web.listen", "port 'http'"),
    ({"smtp": {"listen": "no such host:25"}}, "smtp.listen", "neither an IP address nor a host name"),
    ({"smtp": {"listen": 2525}}, "smtp.listen", "a port alone; write host:port, e.g. 0.0.0.0:2525"),
    ({"smtp": {"tls": {"cert": "c.pem", "key": "k.pem", "implicit_listen": "0.0.0.0:99999"}}},
     "smtp.tls.implicit_listen", "port 99999"),
])
def test_listen_address_is_checked(cfg: dict[str, object], key: str, shown: str) -> None:
    err = _error(cfg)
    assert err.startswith(f"{key}: ") and shown in err and "\n" not in err
    if shown.startswith("port"):
        assert "1-65535" in err


def test_serve_refuses_a_port_out_of_range_without_listening(tmp_path: Path) -> None:
    """It used to listen on 80800 mod 65536 (15264) instead."""
    cfg = tmp_path / "gateway.yaml"
    cfg.write_text(yaml.safe_dump({"data_dir": str(tmp_path / "data"), "smtp": {"listen": "127.0.0.1:80800"},
                                   "web": {"listen": f"127.0.0.1:{free_port()}"}}))
    r = run_cli("--config", str(cfg), "serve", cwd=tmp_path, timeout=60)
    assert r.returncode == 2
    assert "smtp.listen: port 80800" in r.stderr.decode()


def test_listen_address_forms() -> None:
    def smtp(listen: str) -> tuple[str, int]:
        return parse_settings({"smtp": {"listen": listen}}).smtp.host_port

    assert smtp("127.0.0.1:25") == ("127.0.0.1", 25) and smtp("[::1]:2525") == ("::1", 2525)
    assert smtp("::1") == ("::1", 2525) and smtp(":25") == ("0.0.0.0", 25) and smtp("localhost") == ("localhost", 2525)
    assert smtp("127.0.0.1:65535") == ("127.0.0.1", 65535) and smtp("0.0.0.0:1") == ("0.0.0.0", 1)


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
