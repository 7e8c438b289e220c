"""A person corrects a document's fields (the document page's form and ``PATCH /api/documents/<id>``).

The corrections are checked (gateway.fields.corrections), kept apart from
what was read, and teach the supplier's layout: where the corrected value is
printed in the document (gateway.fields.learned) is kept under the supplier's
key, so the next document of that supplier reads right.
"""

from __future__ import annotations

import logging
import re
from typing import Any
from urllib.parse import unquote

from werkzeug.exceptions import BadRequest

from gateway.fields import corrections, learned
from gateway.fields.suppliers import sender_domain
from web.data import document_fields
from web.preview import layout_of

log = logging.getLogger(__name__)


def learn(service: Any, doc: dict[str, Any], checked: dict[str, str | None]) -> dict[str, str]:
    """Learn where the corrected values are printed; returns field -> what was learned, in words."""
    store = service.store
    out: dict[str, str] = {}
    wanted = {k: v for k, v in checked.items() if v is not None and k in learned.LEARNABLE}
    for name, value in checked.items():
        if value is None:  # withdrawn: what it taught is forgotten
            store.forget_layout(int(doc["id"]), name)
    if not wanted:
        return out
    fields = document_fields(store.document(int(doc["id"])) or doc)[0]
    key = learned.supplier_key(fields, sender_domain(store.message(int(doc["message_id"]))))
    layout = layout_of(service, doc) if key else None
    if key is None or layout is None or not layout.lines:
        return out
    for name, value in wanted.items():
        entry = learned.locate(layout, name, value, int(doc["id"]))
        if entry is None:
            store.forget_layout(int(doc["id"]), name)
            continue
        store.learn_layout(key, entry)
        out[name] = f"label “{entry.label}”" if entry.label else f"its place on page {entry.page}"
    log.info("document %s: learned %s for supplier %s", doc["id"], ", ".join(sorted(out)) or "nothing", key)
    return out


def check_all_or_400(given: Any) -> dict[str, str | None]:
    """The corrections checked (gateway.fields.corrections), or 400 naming the field."""
    try:
        return corrections.check_all(given)
    except corrections.CorrectionError as exc:
        raise BadRequest(str(exc)) from None


def correct(service: Any, document_id: int, given: Any, by: str) -> tuple[dict[str, tuple[str | None, str | None]],
                                                                           dict[str, str]]:
    """Check and record corrections, and learn from them: (field -> (before, now), field -> what was learned)."""
    from web.actions import document_or_404

    doc = document_or_404(service, document_id)
    checked = check_all_or_400(given)
    changed = service.store.correct_fields(document_id, checked, by=by)
    taught = learn(service, doc, checked)
    if checked.get("seller") or checked.get("seller_vat_id"):  # a person named the seller: its supplier learns
        service.pipeline.suppliers.learn_confirmed(document_id, by)
    return changed, taught


def in_words(changed: dict[str, tuple[str | None, str | None]], taught: dict[str, str]) -> str:
    """What a correction changed, for the page's flash."""
    if not changed:
        return "Nothing changed: the fields already had these values."
    parts = []
    for name, (before, now) in changed.items():
        label = name.replace("_", " ")
        parts.append(f"{label}: {before or '—'} → {now}" if now is not None else
                     f"{label}: correction withdrawn, back to what was read ({before or '—'} before)")
    text = "Corrected " + "; ".join(parts) + "."
    if taught:
        text += " Learned for this supplier's next documents: " + ", ".join(
            f"{name.replace('_', ' ')} by its {how}" for name, how in taught.items()) + "."
    return text


def _delivered_name(location: str) -> str:
    """A delivered file's name, without the counter a name clash added ("x (2).pdf" -> "x.pdf")."""
    name = unquote(location.replace("\\", "/").rstrip("/").rpartition("/")[2])
    return re.sub(r" \(\d+\)(?=\.[^.]*$|$)", "", name)


def renamed_exports(service: Any, doc: dict[str, Any]) -> list[dict[str, str]]:
    """Delivered exports whose file would now get another name (the fields it is named by changed)."""
    from gateway.exporters.base import naming_values
    from gateway.naming import render_pattern, split_ext

    row = service.store.document(int(doc["id"]))
    msg = service.store.message(int(row["message_id"])) if row else None
    if row is None:
        return []
    targets = {t.name: t for t in service.settings.exports}
    out = []
    for e in service.store.exports_of(int(row["id"])):
        target = targets.get(e["target"])
        if e["state"] != "delivered" or target is None or target.type not in ("folder", "webdav") or not e["location"]:
            continue
        _, ext = split_ext(str(row["filename"]))
        now = render_pattern(target.filename, naming_values(row, msg or {}), ext.lower())
        new_name = now.replace("\\", "/").rpartition("/")[2]
        if _delivered_name(str(e["location"])) != new_name:
            out.append({"target": str(e["target"]), "was": _delivered_name(str(e["location"])), "now": now})
    return out
