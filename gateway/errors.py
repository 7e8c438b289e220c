"""The one exception tree of invoice-gateway.

Every error the gateway raises on purpose is a ``GatewayError``. Foreign
exceptions are wrapped at the boundary with ``raise ... from exc``; only
``gateway.cli`` turns these into exit codes.

::

    GatewayError
     ├── ConfigError            gateway.yaml is invalid (names the key path)
     ├── RuleError              a rule file is invalid (file, line, key path)
     ├── StoreError             the database or the file store failed
     │    └── DataDirInUse      another serve already uses the data_dir
     ├── SpoolError             a message could not be made durable
     ├── ParseError             a message could not be parsed (quarantine)
     ├── RenderError            a body or XML could not be rendered to PDF
     │    └── RenderLimitError  the renderer hit its time or memory limit
     ├── EInvoiceError          an e-invoice could not be read
     ├── SourceError            a mail source (IMAP, folder) failed
     │    └── MailboxError      an IMAP mailbox failed (with a hint for people)
     └── ExportError            a delivery failed; ``retryable`` says if a retry can help
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base class of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """gateway.yaml (or the environment) is invalid; the message names the key path."""


class RuleError(GatewayError):
    """A rule file is invalid; the message names the file, line and key path."""


class StoreError(GatewayError):
    """The database or the document store failed."""


class DataDirInUse(StoreError):
    """Another ``serve`` holds the data_dir; the message names its process."""


class SpoolError(GatewayError):
    """A message could not be written durably; SMTP answers 451."""


class ParseError(GatewayError):
    """A message could not be parsed; it is quarantined with this reason."""


class RenderError(GatewayError):
    """A mail body or an XML invoice could not be rendered to PDF."""


class RenderLimitError(RenderError):
    """The renderer was stopped by its time or memory limit."""


class EInvoiceError(GatewayError):
    """An e-invoice could not be read."""


class SourceError(GatewayError):
    """A mail source (IMAP mailbox, hot folder) failed."""


MAILBOX_ERROR_KINDS = ("auth", "certificate", "tls", "unreachable", "timeout", "connection", "folder_missing",
                       "oauth", "oauth_expired", "imap", "store", "error")
"""Every ``MailboxError.kind`` (gateway.sources.imap.connect describes them)."""


class MailboxError(SourceError):
    """An IMAP mailbox failed; ``hint`` tells a person what to do."""

    def __init__(self, message: str, *, kind: str = "error", hint: str | None = None,
                 folder: str | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.hint = hint
        self.folder = folder  # the folder it concerns, when it concerns one


class ExportError(GatewayError):
    """A delivery to a sync target failed.

    ``retryable`` is True when trying again later can help (a timeout, a 5xx,
    a refused connection) and False when it cannot (401, 403, a refused
    recipient): such an export is shown as a permanent failure.
    """

    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable
