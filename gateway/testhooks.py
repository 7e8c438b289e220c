"""Test-only hooks that stop a worker process at a known point; off unless ``GATEWAY_TEST_HOOKS=1``.

The tests of worker deaths, the memory ceiling and the per-mail deadline
need a mail that kills, stalls or inflates the worker that processes it,
whatever the parser does. A worker process started with the environment
variable set (the tests set it for ``serve``, whose workers inherit it)
looks for a header ``X-Gateway-Test-Hook: ACTION`` in each mail it claims:

``sleep``       write ``data_dir/test-hooks/<id>-<attempt>.pid``, then sleep until killed
``sleep-once``  the same on the first attempt only; later attempts process the mail
``die``         SIGKILL itself
``allocate``    allocate memory 16 MB at a time until refused; write how much to
                ``data_dir/test-hooks/<id>-<attempt>.allocated`` and raise MemoryError

Nothing here runs in production: ``serve`` never sets the variable, and
without it the worker does not install the hook.
"""

from __future__ import annotations

import os
import re
import signal
import time
from collections.abc import Callable
from pathlib import Path

from gateway.store import Row

ENV = "GATEWAY_TEST_HOOKS"
_HEADER = re.compile(rb"^X-Gateway-Test-Hook:[ \t]*([a-z-]+)", re.M | re.I)
_CHUNK = 16 * 1024**2
_SAFETY = 8 * 1024**3  # without a ceiling the hook stops here rather than take the machine


def enabled() -> bool:
    """Whether the environment asks for the hooks."""
    return os.environ.get(ENV) == "1"


def hook(data_dir: Path) -> Callable[[Row], None]:
    """The hook a worker runs on each claimed message (before it is processed)."""
    out = Path(data_dir) / "test-hooks"

    def run(row: Row) -> None:
        try:
            with open(Path(data_dir) / row["raw_path"], "rb") as fh:
                head = fh.read(65536).split(b"\r\n\r\n", 1)[0].split(b"\n\n", 1)[0]
        except OSError:
            return
        m = _HEADER.search(head)
        if m is None:
            return
        action = m.group(1).decode().lower()
        attempt = int(row.get("attempts") or 0)
        stem = out / f"{row['id']}-{attempt}"
        out.mkdir(exist_ok=True)
        if action == "sleep" or (action == "sleep-once" and attempt == 1):
            stem.with_suffix(".pid").write_text(str(os.getpid()))
            while True:
                time.sleep(3600)
        elif action == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        elif action == "allocate":
            chunks: list[bytearray] = []
            try:
                while len(chunks) * _CHUNK < _SAFETY:
                    chunks.append(bytearray(_CHUNK))
            except MemoryError:
                got = len(chunks) * _CHUNK
                chunks.clear()
                stem.with_suffix(".allocated").write_text(str(got))
                raise
            got = len(chunks) * _CHUNK
            chunks.clear()
            stem.with_suffix(".allocated").write_text(str(got))

    return run
