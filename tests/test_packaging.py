"""What a new user does first: a fresh clone, `make run`, a mail, a PDF in ./exports.

Also: the Dockerfile installs the same Debian packages and the same Python
package as `make`, so the container is what the tests test.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, make_mail, unique_pdf, wait_for, wait_port


def test_dockerfile_installs_what_make_installs() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    makefile = (ROOT / "Makefile").read_text()
    # one list of Debian packages, read by both
    assert "DEB_RUNTIME := $(shell cat deps/debian-runtime.txt)" in makefile
    assert re.search(r"^install: deb-runtime", makefile, re.M) and re.search(r"^run: install", makefile, re.M)
    assert "COPY deps/debian-runtime.txt /tmp/debian-runtime.txt" in dockerfile
    assert "xargs -a /tmp/debian-runtime.txt apt-get install" in dockerfile
    # the same Python package: this project, with its pyproject dependencies
    assert "$(PIP) install -q -e ." in makefile
    assert re.search(r"^RUN pip install \.$", dockerfile, re.M)
    for path in ("pyproject.toml", "gateway", "web"):
        assert re.search(rf"^COPY {re.escape(path)}\b", dockerfile, re.M), path
    assert "EXPOSE 2525 8080" in dockerfile and "HEALTHCHECK" in dockerfile and "/healthz" in dockerfile
    assert re.search(r"^USER gateway$", dockerfile, re.M)
    packages = (ROOT / "deps/debian-runtime.txt").read_text().split()
    assert "libpango-1.0-0" in packages  # weasyprint renders mail bodies with pango


def test_compose_mounts_data_rules_and_exports() -> None:
    import yaml

    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    svc = compose["services"]["invoice-gateway"]
    assert {v.split(":")[1] for v in svc["volumes"] if not v.startswith("#")} >= {"/data", "/rules", "/exports"}
    assert "ADMIN_PASSWORD" in svc["environment"]


def test_container_config_is_valid() -> None:
    from gateway.config import load_settings

    s = load_settings(ROOT / "docker/gateway.yaml", env={})
    assert str(s.data_dir) == "/data" and str(s.rules_dir) == "/rules"
    assert s.smtp.host_port[0] == "0.0.0.0" and s.web.host_port[0] == "0.0.0.0"  # a NAS: the network
    assert s.web.password is None  # empty: generated at first start


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


@pytest.mark.timeout(600)
def test_fresh_clone_make_run_exports_a_mail(tmp_path: Path) -> None:
    for port in (2525, 8080):
        assert _port_free(port), f"port {port} is busy: `make run` uses it; stop what listens there"
    clone = tmp_path / "invoice-gateway"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "GATEWAY_"))}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if ".venv" not in p)
    log = tmp_path / "make-run.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(["make", "run"], cwd=clone, stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
    def listening_or_dead() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"make run exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", 2525)) == 0

    try:
        wait_for(listening_or_dead, timeout=400, interval=0.5)
        wait_port(8080, timeout=30)
        pdf = unique_pdf("fresh-clone")
        import smtplib

        with smtplib.SMTP("127.0.0.1", 2525, timeout=30) as s:
            s.send_message(make_mail(attachments=[("first-invoice.pdf", pdf, "application/pdf")]),
                           to_addrs=["invoices@localhost"])
        exported = wait_for(lambda: list((clone / "exports").rglob("first-invoice.pdf")), timeout=30)
        assert exported[0].read_bytes() == pdf
        text = log.read_text(errors="replace")
        assert "no gateway.yaml found" in text and "gateway.example.yaml" in text
        # safe default: this machine only, and the log says how to open it and how to call the CLI
        import psutil

        listening = {c.laddr.port: c.laddr.ip for c in psutil.net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN and c.laddr.port in (2525, 8080)}
        assert listening == {2525: "127.0.0.1", 8080: "127.0.0.1"}
        assert "set smtp.listen: 0.0.0.0:2525 and web.listen: 0.0.0.0:8080 in gateway.yaml" in text
        assert ".venv/bin/invoice-gateway status" in text
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError("make run did not stop within 60 s of SIGTERM:\n"
                                 + log.read_text(errors="replace")[-6000:]) from None
    text = log.read_text(errors="replace")
    assert "stopped: every mail that got 250 is on disk" in text.strip().splitlines()[-1]
    assert "weasyprint.progress" not in text
    assert (clone / "data" / "gateway.db").exists()
    shutil.rmtree(clone / ".venv", ignore_errors=True)
