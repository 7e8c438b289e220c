"""The ``webdav`` target: Nextcloud, ownCloud, Synology, Apache mod_dav, any WebDAV share.

Each document is uploaded under a temporary name in its final folder, always
with a Content-Length (never chunked: Nextcloud and Apache with FastCGI
truncate chunked PUTs), then MOVEd to its final name with ``Overwrite: F``.
So a half-written file is never visible under its final name, and a file
that is already there is never replaced: a different file gets a counter
suffix (``name (2).pdf``), the same content counts as delivered (its size,
then a GET and SHA-256, decide). A server that refuses MOVE gets the file
straight under its final name, once a PROPFIND (or HEAD) found the name free,
and with ``If-None-Match: *``: nginx and rclone ignore that header and would
overwrite.

Before a file counts as delivered, the server is asked how many bytes it
kept (PROPFIND ``getcontentlength``, else HEAD): SabreDAV on a full disk
answers 201 and keeps 0 bytes. A short file is removed and retried.

Errors say whether a retry can help and what to fix: 507, 5xx, timeouts,
refused connections and a 405 to a PUT on a server that takes uploads (rclone
on a full disk) are retried; 401, a 403 (credentials, or this file refused:
read-only share, forbidden name, antivirus), a redirect (to https), a server
that takes no uploads and a missing base folder are permanent. The password
never appears in a message.
"""

from __future__ import annotations

import hashlib
import logging
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urljoin, urlsplit, urlunsplit

import httpx
from lxml import etree

from gateway.config import ExportConfig
from gateway.errors import ExportError
from gateway.exporters.base import ExportItem
from gateway.naming import with_counter

log = logging.getLogger(__name__)

MAX_COUNTER = 1000
TMP_PREFIX = ".invoice-gateway-"
TIMEOUT = httpx.Timeout(60.0, connect=15.0)
# statuses a retry can cure besides 5xx: request timeout, locked, too early, too many requests
_RETRYABLE_4XX = frozenset({408, 423, 425, 429})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_PROPFIND_LENGTH = (b'<?xml version="1.0" encoding="utf-8"?>'
                    b'<d:propfind xmlns:d="DAV:"><d:prop><d:getcontentlength/></d:prop></d:propfind>')
_MAX_PROPFIND_ANSWER = 1 << 20  # Depth 0 on one file: a few hundred bytes
UNKNOWN = -1  # _length: the file is there, but the server tells no size


def redact(url: str) -> str:
    """``url`` without any user:password part, for messages and logs."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


class _Missing(Exception):
    """A PUT, MOVE or MKCOL answered 404/409: a folder on the way is gone."""


class WebDAVExporter:
    """Delivers into the collection at ``url`` under the target's naming pattern."""

    # a document delivered again (after a crash before its record) is found on the server by
    # its size and SHA-256, not uploaded twice, so the runner may record deliveries in batches
    recognises_redelivery = True

    def __init__(self, target: ExportConfig, transport: httpx.BaseTransport | None = None) -> None:
        assert target.url is not None
        self.name = target.name
        # credentials written into the url move to the auth header, so no URL (or log line) carries them
        parts = urlsplit(target.url)
        username, password = target.username, target.password
        if parts.username is not None and username is None:
            username, password = unquote(parts.username), unquote(parts.password or "")
        self.base = redact(target.url).rstrip("/") + "/"
        self.shown = self.base
        auth = httpx.BasicAuth(username, password or "") if username else None
        # made once: building a context (loading the CA bundle) costs more than a small upload
        try:
            verify = (ssl.create_default_context(cafile=str(target.ca_file)) if target.ca_file is not None
                      else httpx.create_ssl_context())
        except (OSError, ssl.SSLError) as exc:
            raise ExportError(f"exports {target.name}: cannot read ca_file {target.ca_file}: {exc}",
                              retryable=False) from exc
        self._client_args: dict[str, Any] = dict(
            auth=auth, verify=verify, timeout=TIMEOUT, transport=transport, follow_redirects=False,
            headers={"User-Agent": "invoice-gateway"})
        self.sidecar = target.sidecar == "json"
        self.folders: set[str] = set()  # folders known to exist (made or found)
        self.lock = threading.Lock()
        self.move = True  # False once the server refused MOVE
        self._local = threading.local()  # .client: this thread's client while it runs a batch

    # -- the interface ---------------------------------------------------------------------

    def deliver(self, item: ExportItem) -> str:
        """Upload the document (and its sidecar); return the URL it has on the server.

        Inside ``batch()`` the deliveries of a thread share one client, so one kept-alive
        connection; outside, a delivery has a connection of its own for its few requests.
        """
        client: httpx.Client | None = getattr(self._local, "client", None)
        if client is not None:
            return _Session(self, client).deliver(item)
        with httpx.Client(**self._client_args) as client:
            return _Session(self, client).deliver(item)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Deliveries from this thread until the end of the block share one client (keep-alive).

        The runner opens one per run of a target: a connection per document cost a
        TCP handshake (a TLS one on https) and a client each. Nothing stays open after
        the block, and threads never share a client.
        """
        if getattr(self._local, "client", None) is not None:
            yield  # nested: the outer batch owns the client
            return
        with httpx.Client(**self._client_args) as client:
            self._local.client = client
            try:
                yield
            finally:
                self._local.client = None


class _Session:
    """One delivery: the exporter's settings and memory, and a client of its own."""

    def __init__(self, exporter: WebDAVExporter, client: httpx.Client) -> None:
        self.ex = exporter
        self.client = client
        self.base = exporter.base
        self.shown = exporter.shown
        self.sidecar = exporter.sidecar

    def deliver(self, item: ExportItem) -> str:
        """See WebDAVExporter.deliver."""
        try:
            size = item.path.stat().st_size
        except OSError as exc:
            raise ExportError(f"the document file {item.path} cannot be read: {exc.strerror}", retryable=False) from exc
        folder = item.relpath.rpartition("/")[0]
        for attempt in (1, 2):
            try:
                self._makedirs(folder)
                rel = self._store(item.relpath, item.path, size, item.sha256, item.content_type,
                                  tmp=f"{TMP_PREFIX}{item.export_id}-{item.sha256[:16]}.tmp")
                if self.sidecar:
                    data = item.sidecar()
                    self._store(rel + ".json", data, len(data), hashlib.sha256(data).hexdigest(),
                                "application/json", tmp=f"{TMP_PREFIX}{item.export_id}-json.tmp", keep=True)
                return self._url(rel)
            except _Missing as exc:
                # a folder vanished under us (deleted on the server): forget what we made, try once more
                with self.ex.lock:
                    self.ex.folders.clear()
                if attempt == 2:
                    self._check_base()
                    raise ExportError(f"{self.shown}: {exc}; the folder may have been removed meanwhile") from exc
        raise AssertionError("unreachable")

    # -- steps -----------------------------------------------------------------------------

    def _makedirs(self, folder: str) -> None:
        """MKCOL each level of ``folder`` below the base (405: it exists)."""
        if not folder:
            return
        path = ""
        for part in folder.split("/"):
            path = f"{path}/{part}" if path else part
            with self.ex.lock:
                if path in self.ex.folders:
                    continue
            resp = self._send("MKCOL", self._url(path) + "/", what=f"creating the folder {path}")
            if resp.status_code in (200, 201, 405):
                pass  # 405: the folder exists already
            elif resp.status_code in _REDIRECTS:
                pass  # _send let through only a redirect to the same folder: it exists
            elif resp.status_code in (404, 409):
                self._check_base()
                raise _Missing(f"creating the folder {path} failed: {resp.status_code}")
            else:
                raise self._error(resp, f"creating the folder {path}")
            with self.ex.lock:
                self.ex.folders.add(path)

    def _store(self, relpath: str, source: Path | bytes, size: int, sha256: str, content_type: str,
               *, tmp: str, keep: bool = False) -> str:
        """Put ``source`` at ``relpath`` (or its first free counter name); return the name used.

        ``keep``: an existing file of that name is left as it is and counts as done (sidecars).
        """
        folder = relpath.rpartition("/")[0]
        tmp_rel = f"{folder}/{tmp}" if folder else tmp
        uploaded = False
        for n in range(1, MAX_COUNTER + 1):
            rel = relpath if n == 1 else with_counter(relpath, n)
            if self.ex.move:
                if not uploaded:
                    self._put(tmp_rel, source, size, content_type, what=f"uploading {relpath} (as {tmp})")
                    # checked before the MOVE, so a short file never appears under the final name
                    self._verify(tmp_rel, size)
                    uploaded = True
                resp = self._send("MOVE", self._url(tmp_rel), what=f"renaming the upload to {rel}",
                                  headers={"Destination": self._url(rel), "Overwrite": "F"})
                if resp.status_code in (200, 201, 204):
                    return rel
                if resp.status_code == 412:  # the final name is taken
                    if keep or self._same(rel, size, sha256):
                        self._delete(tmp_rel)
                        return rel
                    continue
                if resp.status_code in (405, 501):
                    log.warning("%s does not allow MOVE; uploading straight to the final name", self.shown)
                    self.ex.move = False
                    self._delete(tmp_rel)
                    uploaded = False
                elif resp.status_code in (404, 409):
                    raise _Missing(f"renaming the upload to {rel} failed: {resp.status_code}")
                else:
                    raise self._error(resp, f"renaming the upload to {rel}")
            # No MOVE: look before writing, since nginx and rclone ignore If-None-Match and
            # would overwrite; the header still closes the gap on servers that honour it.
            length = self._length(rel)
            if length is not None:
                if keep or self._same(rel, size, sha256, None if length == UNKNOWN else length):
                    return rel
                continue
            resp = self._put(rel, source, size, content_type, if_none_match=True)
            if resp.status_code == 412:
                if keep or self._same(rel, size, sha256):
                    return rel
                continue
            self._verify(rel, size)
            return rel
        raise ExportError(f"more than {MAX_COUNTER} different files are named {relpath!r} in {self.shown}",
                          retryable=False)

    def _put(self, rel: str, source: Path | bytes, size: int, content_type: str,
             if_none_match: bool = False, what: str | None = None) -> httpx.Response:
        """PUT with a Content-Length; 412 is returned to the caller when ``if_none_match``."""
        headers = {"Content-Length": str(size), "Content-Type": content_type}
        if if_none_match:
            headers["If-None-Match"] = "*"
        what = what or f"uploading {rel}"
        if isinstance(source, bytes):
            resp = self._send("PUT", self._url(rel), what=what, headers=headers, content=source)
        else:
            try:
                fh = open(source, "rb")
            except OSError as exc:
                raise ExportError(f"the document file {source} cannot be read: {exc.strerror}",
                                  retryable=False) from exc
            with fh:
                resp = self._send("PUT", self._url(rel), what=what, headers=headers, content=fh)
        if resp.status_code in (200, 201, 204) or (if_none_match and resp.status_code == 412):
            return resp
        if resp.status_code in (404, 409):
            raise _Missing(f"{what} failed: {resp.status_code}")
        error = self._error(resp, what)
        if rel.rpartition("/")[2].startswith(TMP_PREFIX):
            self._delete(rel)  # rclone keeps an empty file where a PUT failed
        raise error

    def _verify(self, rel: str, size: int) -> None:
        """Raise a retryable error (and remove the file) unless the server kept ``size`` bytes of ``rel``."""
        stored = self._length(rel)
        if stored in (size, UNKNOWN):
            return  # UNKNOWN: the server tells no size, its answer to the PUT is all there is
        if stored is None:
            raise ExportError(f"{self.shown} answered the upload of {rel} but does not have the file; "
                              "it is sent again later")
        self._delete(rel)
        space = " (is its disk full?)" if stored < size else ""
        raise ExportError(f"{self.shown} kept {stored} of the {size} bytes of {rel}{space}; "
                          "the file was removed and is sent again later")

    def _length(self, rel: str) -> int | None:
        """The size of the file ``rel`` on the server; None when there is none, UNKNOWN when it tells none.

        PROPFIND ``getcontentlength`` is what WebDAV servers report (Nextcloud: the
        size before encryption); HEAD's Content-Length where the server has no PROPFIND.
        """
        what = f"checking {rel}"
        resp = self._send("PROPFIND", self._url(rel), what=what, content=_PROPFIND_LENGTH,
                          headers={"Depth": "0", "Content-Type": 'application/xml; charset="utf-8"'})
        if resp.status_code == 404:
            return None
        if resp.status_code == 207:
            length = _content_length(resp.content)
            if length is not None:
                return length
        elif resp.status_code >= 500 or resp.status_code in _RETRYABLE_4XX:
            raise self._error(resp, what)
        head = self._send("HEAD", self._url(rel), what=what)
        if head.status_code == 404:
            return None
        if head.status_code >= 400:
            raise self._error(head, what)
        value = head.headers.get("Content-Length", "")
        return int(value) if value.isdigit() else UNKNOWN

    def _same(self, rel: str, size: int, sha256: str, length: int | None = None) -> bool:
        """Whether the file at ``rel`` holds these bytes: the size first, then a GET and SHA-256."""
        if length is None:
            head = self._send("HEAD", self._url(rel), what=f"checking {rel}")
            if head.status_code == 404:
                return False
            if head.status_code >= 400:
                raise self._error(head, f"checking {rel}")
            value = head.headers.get("Content-Length")
            length = int(value) if value is not None and value.isdigit() else None
        if length is not None and length != size:
            return False
        digest = hashlib.sha256()
        try:
            with self.client.stream("GET", self._url(rel)) as resp:
                if resp.status_code >= 400:
                    raise self._error(resp, f"reading {rel}")
                for chunk in resp.iter_bytes(1 << 20):
                    digest.update(chunk)
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, f"reading {rel}") from exc
        return digest.hexdigest() == sha256

    def _delete(self, rel: str) -> None:
        """Remove a file of ours (an upload); a failure only leaves it behind."""
        try:
            resp = self.client.request("DELETE", self._url(rel))
            if resp.status_code >= 400 and resp.status_code != 404:
                log.warning("%s: could not remove the upload %s: %s", self.shown, rel, resp.status_code)
        except httpx.HTTPError as exc:
            log.warning("%s: could not remove the upload %s: %s", self.shown, rel, exc)

    def _check_base(self) -> None:
        """Raise a permanent error when the base folder itself does not exist."""
        resp = self._send("PROPFIND", self.base, what="checking the folder", headers={"Depth": "0"})
        if resp.status_code in (404, 409):
            raise ExportError(f"{self.shown} does not exist: create the folder on the server or correct the url",
                              retryable=False)

    # -- HTTP ------------------------------------------------------------------------------

    def _url(self, rel: str) -> str:
        return self.base + "/".join(quote(p, safe="") for p in rel.split("/"))

    def _send(self, method: str, url: str, *, what: str, **kw: object) -> httpx.Response:
        """One request; 401, 403 and redirects (but MKCOL's to the same folder) raise at once."""
        try:
            resp = self.client.request(method, url, **kw)  # type: ignore[arg-type]
        except httpx.HTTPError as exc:
            raise self._transport_error(exc, what) from exc
        if resp.status_code in (401, 403):
            raise self._error(resp, what)
        if resp.status_code in _REDIRECTS:
            target = urljoin(url, resp.headers.get("Location", ""))
            # some servers redirect an existing collection to its form with (or without) the "/"
            if not (method == "MKCOL" and target.rstrip("/") == url.rstrip("/")):
                raise self._error(resp, what)
        return resp

    def _transport_error(self, exc: httpx.HTTPError, what: str) -> ExportError:
        text = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.TimeoutException):
            return ExportError(f"{self.shown}: timed out while {what}")
        if isinstance(exc.__context__, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
            return ExportError(f"the certificate of {self.shown} is not trusted ({text}); "
                               "for a self-signed or private CA set ca_file", retryable=False)
        if isinstance(exc, httpx.ConnectError):
            return ExportError(f"cannot connect to {self.shown}: {text}")
        return ExportError(f"{self.shown}: {what} failed: {text}")

    def _error(self, resp: httpx.Response, what: str) -> ExportError:
        """The error for a refusal: whether a retry can help, and what a person has to fix."""
        code = resp.status_code
        reason = f"{code} {resp.reason_phrase}".strip()
        request = f"{resp.request.method} {unquote(resp.request.url.path)}"
        if code == 401:
            return ExportError(f"authentication failed for {self.shown}: check username and app password "
                               f"(401 while {what})", retryable=False)
        if code == 403:
            # Nextcloud (and Apache's Require rules) answer 403 also for one file: a read-only
            # share, a forbidden name, an antivirus block. Reading the folder tells them apart.
            if self._login_accepted():
                thing = "folder" if resp.request.method == "MKCOL" else "file"
                return ExportError(f"{reason} for {request} while {what}: the server refused this {thing} (a "
                                   "read-only share, a forbidden file name, or an antivirus block); the login "
                                   "itself was accepted", retryable=False)
            return ExportError(f"authentication failed for {self.shown}: check username and app password, "
                               f"and that the account may write there ({reason} for {request})", retryable=False)
        if code in _REDIRECTS:
            location = redact(urljoin(str(resp.request.url), resp.headers.get("Location", "")))
            return ExportError(f"the server redirects to {self._suggested_base(str(resp.request.url), location)}: "
                               f"use that URL as url ({reason} for {request})", retryable=False)
        if code == 507:
            return ExportError(f"{self.shown} is out of space (507 Insufficient Storage while {what})")
        if code == 405 and resp.request.method == "PUT":
            # rclone answers 405 to a PUT when its disk is full; a server without uploads always does
            if self._takes_uploads(str(resp.request.url)):
                return ExportError(f"{self.shown}: {reason} for {request} while {what}, although the server "
                                   "takes uploads: it may be out of space (rclone answers so on a full disk)")
            return ExportError(f"{self.shown} does not take uploads ({reason} for {request}): "
                               "a read-only share, or WebDAV without PUT; allow uploads or use another url",
                               retryable=False)
        if code == 413:
            return ExportError(f"{self.shown}: the document is larger than the server accepts ({reason} for "
                               f"{request}): raise its upload limit (nginx client_max_body_size, "
                               "PHP upload_max_filesize)", retryable=False)
        if code >= 500 or code in _RETRYABLE_4XX:
            return ExportError(f"{self.shown}: {what} failed: {reason}")
        return ExportError(f"{self.shown}: {what} was refused: {reason} for {request}; no retry can help "
                           "until this is changed on the server or in the target's settings", retryable=False)

    def _login_accepted(self) -> bool:
        """Whether these credentials may read the base folder (PROPFIND Depth 0)."""
        try:
            resp = self.client.request("PROPFIND", self.base, headers={"Depth": "0"})
        except httpx.HTTPError:
            return False
        return resp.status_code in (200, 207)

    def _takes_uploads(self, url: str) -> bool:
        """Whether the server accepts an empty PUT beside ``url`` (removed again): a probe after a 405."""
        probe = url.rpartition("/")[0] + "/" + quote(f"{TMP_PREFIX}probe.tmp", safe="")
        try:
            resp = self.client.request("PUT", probe, content=b"", headers={"Content-Length": "0"})
            if resp.status_code in (200, 201, 204):
                self.client.request("DELETE", probe)
                return True
        except httpx.HTTPError:
            return True  # a lost connection says nothing about PUT: keep trying later
        return False

    def _suggested_base(self, request_url: str, location: str) -> str:
        """The base url the redirect points to (the location without the part below the base)."""
        below = request_url[len(self.base):] if request_url.startswith(self.base) else ""
        if below and location.endswith(below):
            return location[:-len(below)].rstrip("/")
        return location.rstrip("/") if not below else location


def _content_length(answer: bytes) -> int | None:
    """``getcontentlength`` from a PROPFIND answer (a 207 multistatus), if it holds one."""
    if len(answer) > _MAX_PROPFIND_ANSWER:
        return None
    # a parser per call: lxml parsers must not be shared between threads
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
    try:
        root = etree.fromstring(answer, parser)
    except etree.XMLSyntaxError:
        return None
    for element in root.iter("{DAV:}getcontentlength"):
        text = (element.text or "").strip()
        if text.isdigit():
            return int(text)
    return None
