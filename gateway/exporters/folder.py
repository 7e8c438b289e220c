"""The ``folder`` target: copy each document into a directory, never half-written."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from gateway.config import ExportConfig
from gateway.errors import ExportError
from gateway.exporters.base import ExportItem
from gateway.naming import with_counter

MAX_COUNTER = 1000


def _same_file(path: Path, sha256: str, size: int) -> bool:
    try:
        if path.stat().st_size != size:
            return False
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest() == sha256
    except OSError:
        return False


def _write_new(final: Path, data: bytes, tmp: Path) -> bool:
    """Write ``data`` to ``tmp``, then link it to ``final``; False if ``final`` exists."""
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    try:
        os.link(tmp, final)  # atomic, and never replaces an existing file
    except FileExistsError:
        return False
    except OSError:
        # file systems without hard links (some SMB mounts): rename if still free
        if final.exists():
            return False
        os.rename(tmp, final)
        return True
    finally:
        tmp.unlink(missing_ok=True)
    return True


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FolderExporter:
    """Delivers into ``path`` under the target's naming pattern."""

    # a document delivered again (after a crash before its record) is found, not copied twice,
    # so the runner may record deliveries in batches
    recognises_redelivery = True

    def __init__(self, target: ExportConfig) -> None:
        assert target.path is not None
        self.root = Path(target.path)
        self.sidecar = target.sidecar == "json"

    def deliver(self, item: ExportItem) -> str:
        """Copy the document; a different file of the same name gets a counter."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            root = self.root.resolve()
            data = item.read()
            # one temporary name per export: a crash leaves at most this file, and the
            # retry after the restart removes it, whether or not it still has to write
            first = (root / item.relpath).resolve()
            tmp = first.with_name(f".invoice-gateway-{item.export_id}.partial")
            if root in first.parents:
                tmp.unlink(missing_ok=True)
            for n in range(1, MAX_COUNTER + 1):
                rel = item.relpath if n == 1 else with_counter(item.relpath, n)
                final = (root / rel).resolve()
                if root not in final.parents:
                    raise ExportError(f"{rel!r} would leave the export folder", retryable=False)
                final.parent.mkdir(parents=True, exist_ok=True)
                if final.exists():
                    if _same_file(final, item.sha256, len(data)):
                        break  # delivered before (a crash between write and record)
                    continue
                if _write_new(final, data, tmp):
                    break
                if _same_file(final, item.sha256, len(data)):
                    break
            else:
                raise ExportError(f"more than {MAX_COUNTER} different files are named {item.relpath!r}", retryable=False)
            if self.sidecar:
                side = final.with_name(final.name + ".json")
                if not side.exists():
                    _write_new(side, item.sidecar(), tmp)
            _fsync_dir(final.parent)
        except ExportError:
            raise
        except PermissionError as exc:
            raise ExportError(f"no permission to write in {self.root}: {exc.strerror}", retryable=False) from exc
        except OSError as exc:
            raise ExportError(f"cannot write to {self.root}: {exc.strerror or exc}") from exc
        return str(final.relative_to(root))
