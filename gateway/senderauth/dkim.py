"""DKIM (RFC 6376): verify each DKIM-Signature of a raw message with dkimpy."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import dkim as dkimpy
from dkim.canonicalization import CanonicalizationPolicy

from gateway.senderauth.dns import DNSTempError, Resolver

# Signatures verified per message; each costs a DNS question and a body hash.
MAX_SIGNATURES = 5
_SIG_HEADER = re.compile(rb"^dkim-signature:", re.I | re.M)


@dataclass(frozen=True)
class DKIMResult:
    """The verdict on one DKIM signature.

    Attributes:
        result: pass, fail, policy, neutral, temperror or permerror (RFC 8601
            names); ``policy`` is a signature that verified but covers only
            part of the body (``l=``), which does not count as a pass.
        domain: the signing domain (d=), "" when unreadable.
        selector: the selector (s=), "" when unreadable.
        reason: why it did not pass ("" when it did).
    """

    result: str
    domain: str
    selector: str
    reason: str = ""

    def json(self, aligned: bool) -> dict[str, Any]:
        """The result as stored in messages.auth (with its alignment to From)."""
        return {"result": self.result, "domain": self.domain, "selector": self.selector,
                "aligned": aligned, "reason": self.reason}


class _Notes:
    """A logger for dkimpy that keeps its error messages as the reason."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def error(self, msg: Any, *args: Any) -> None:
        self.errors.append(str(msg) % args if args else str(msg))

    def debug(self, msg: Any, *args: Any) -> None:
        """dkimpy's debug output is not kept."""

    info = warning = debug


def check_dkim(resolver: Resolver, raw: bytes, timeout: float = 5.0) -> list[DKIMResult]:
    """Every DKIM signature of ``raw`` (up to MAX_SIGNATURES), topmost first; [] when unsigned."""
    header_end = re.search(rb"\r?\n\r?\n", raw)
    head = raw[: header_end.start()] if header_end else raw
    count = len(_SIG_HEADER.findall(b"\n" + head)) if b"dkim-signature" in head.lower() else 0
    return [_verify(resolver, raw, i, timeout) for i in range(min(count, MAX_SIGNATURES))]


def _verify(resolver: Resolver, raw: bytes, idx: int, timeout: float) -> DKIMResult:
    state = {"temp": "", "missing": False}

    def dnsfunc(name: bytes, timeout: float = 5) -> bytes | None:
        try:
            records = resolver.lookup(name.decode("ascii", "replace"), "TXT")
        except DNSTempError as exc:
            state["temp"] = str(exc)
            raise dkimpy.DnsTimeoutError(str(exc)) from exc
        if not records:
            state["missing"] = True
            return None
        return b"".join(records[0])

    notes = _Notes()
    signer: Any = None
    try:
        signer = dkimpy.DKIM(raw, logger=notes, timeout=int(max(1, timeout)))
        ok = signer.verify(idx=idx, dnsfunc=dnsfunc)
    except dkimpy.DKIMException as exc:
        if "body hash mismatch" in str(exc):  # the body was changed after signing
            return DKIMResult("fail", *_ids(signer), reason="body hash did not verify (the body was changed)")
        return DKIMResult("permerror", *_ids(signer), reason=f"malformed signature: {exc}")
    except Exception as exc:  # a bug in dkimpy must not stop the mail
        return DKIMResult("temperror", *_ids(signer), reason=f"DKIM check failed: {type(exc).__name__}: {exc}")
    domain, selector = _ids(signer)
    if ok:
        short = _unsigned_tail(signer)
        if short:
            # anyone may append a part (a PDF) after the signed length: the mail is not vouched for
            return DKIMResult("policy", domain, selector, short)
        return DKIMResult("pass", domain, selector)
    if state["temp"]:
        return DKIMResult("temperror", domain, selector, f"key lookup failed: {state['temp']}")
    if state["missing"]:
        return DKIMResult("permerror", domain, selector, f"no key published at {selector}._domainkey.{domain}")
    reason = "; ".join(notes.errors) or "signature did not verify"
    return DKIMResult("fail", domain, selector, reason)


def _unsigned_tail(signer: Any) -> str:
    """Why a verified signature does not cover the whole body (``l=`` shorter than it), or ""."""
    fields = getattr(signer, "signature_fields", None) or {}
    limit = fields.get(b"l")
    if limit is None:
        return ""
    try:
        policy = CanonicalizationPolicy.from_c_value(fields.get(b"c", b"simple/simple"))
        body = len(policy.canonicalize_body(signer.body))
        signed = int(limit)
    except Exception:  # it verified, so the values were readable; be safe anyway
        return "the signature's body length (l=) could not be read"
    if signed >= body:
        return ""
    return (f"the signature covers only the first {signed} of {body} bytes of the body (l=); "
            "what follows is not signed, so the signature does not count as a pass")


def _ids(signer: Any) -> tuple[str, str]:
    fields = getattr(signer, "signature_fields", None) or {} if signer is not None else {}
    domain = fields.get(b"d", b"").decode("ascii", "replace").strip().lower()
    selector = fields.get(b"s", b"").decode("ascii", "replace").strip()
    return domain, selector
