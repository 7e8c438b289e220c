"""A full disk: the mail gets 451, and the partial file is removed at once (not at the next start)."""

from __future__ import annotations

import os
import shutil
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import Gateway, base_config, make_mail, need, unique_pdf, wait_for


@pytest.fixture
def small_disk(workdir: Path) -> Iterator[Path]:
    """data_dir on a 1 MB tmpfs, unmounted afterwards."""
    need(os.geteuid() == 0, "mounting a tmpfs needs root (make test runs as root in CI)")
    need(shutil.which("mount") is not None, "mount(8) is not installed")
    data = workdir / "data"
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(data)], check=True)
    try:
        yield data
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)


def test_full_disk_answers_451_and_leaves_no_partial_file(workdir: Path, small_disk: Path) -> None:
    gw = Gateway(workdir, base_config(workdir, smtp={**base_config(workdir)["smtp"], "max_message_size": "4MB"})).start()
    try:
        free = shutil.disk_usage(small_disk).free
        big = make_mail(attachments=[("big.pdf", unique_pdf("big") + os.urandom(free + 200_000), "application/pdf")])
        with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=30) as s:
            with pytest.raises(smtplib.SMTPDataError) as info:
                s.send_message(big, to_addrs=["invoices@localhost"])
            assert info.value.smtp_code == 451
        tmp = small_disk / "mail" / "tmp"
        assert list(tmp.iterdir()) == []  # was: the partial file, until the next start
        assert shutil.disk_usage(small_disk).free >= free - 64 * 1024  # and its space is free again
        # nothing was recorded, and the next (small) mail goes through on the space that was freed
        assert gw.store.status_counts() == {}
        gw.send(make_mail(attachments=[("ok.pdf", unique_pdf("ok"), "application/pdf")]))
        wait_for(gw.exported_files, timeout=20)
    finally:
        gw.stop()
