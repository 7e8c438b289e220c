"""Rules: what is loaded, by file; load errors with file, line and key; the rule tester."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, render_template, request, url_for
from werkzeug.exceptions import HTTPException

from gateway.explain import broken_rules
from web import actions, data
from web.pages import act, service
from web.rulefiles import relative_rule_file, rules_file_text

bp = Blueprint("rules", __name__, url_prefix="/rules")

@bp.get("")
def index() -> Any:
    """Loaded rules grouped by file, and the problems of the last load."""
    svc = service()
    r = data.rules_json(svc)
    by_file: dict[str, list[dict[str, Any]]] = {}
    for rule in r["rules"]:
        by_file.setdefault(rule["file"], []).append(rule)
    for p in r["problems"]:
        p["rel"] = relative_rule_file(svc, p["file"])
    return render_template("rules/index.html", r=r, by_file=dict(sorted(by_file.items())))


@bp.get("/file/<path:file>")
def file(file: str) -> Any:
    """One rule file with line numbers, its rules and their recent messages."""
    svc = service()
    rel, text = rules_file_text(svc, file)
    r = data.rules_json(svc)
    rules = [x for x in r["rules"] if x["file"] == rel]
    problems = [p for p in r["problems"] if relative_rule_file(svc, p["file"]) == rel]
    recent = {x["name"]: svc.store.messages_by_rule(x["name"], 5) for x in rules}
    return render_template("rules/file.html", rel=rel, lines=text.splitlines(), rules=rules, problems=problems,
                           recent=recent, in_force=r["in_force"])


@bp.route("/test", methods=["GET", "POST"])
def tester() -> Any:
    """Upload an .eml or pick a stored message; see which rule decides it and why."""
    svc = service()
    result, error, picked = None, None, None
    source = request.values.get("source") or "smtp"
    draft = request.form.get("draft") if request.method == "POST" else None
    draft_file = request.form.get("draft_file") or None if request.method == "POST" else None
    message_id = request.values.get("message") or None
    try:
        raw: bytes | None = None
        msg = None
        upload = request.files.get("eml") if request.method == "POST" else None
        if upload is not None and upload.filename:
            raw = upload.read()
            picked = f"uploaded file {upload.filename}"
        elif message_id:
            try:
                msg = actions.message_or_404(svc, int(message_id))
            except ValueError:
                abort(400, "message: a message number")
            path = data.raw_path(svc, msg)
            if path is None:
                abort(404, "the raw message file is missing from the data folder")
            raw = path.read_bytes()
            picked = f"message {msg['id']}: {msg['subject'] or '(no subject)'}"
            if "source" not in request.values:
                source = msg["source"]
        elif request.method == "POST":
            abort(400, "choose an .eml file or a stored message")
        if raw is not None:
            result = actions.explain_mail(svc, raw, source=source, draft=draft, message=msg, draft_file=draft_file)
    except HTTPException as exc:
        if exc.code not in (400, 404):
            raise
        error = exc.description
    recent, _ = svc.store.list_messages(limit=30)
    return render_template("rules/test.html", result=result, error=error, picked=picked, recent=recent,
                           source=source, draft=draft or "", draft_file=draft_file or "", message_id=message_id,
                           broken=broken_rules(svc.rules.problems, svc.settings.rules_dir) if svc.rules.problems
                           else None, loaded_at=svc.rules.loaded_at,
                           sources=sorted({"smtp", "import", *svc.store.message_sources(),
                                           *(f"imap:{m.name}" for m in svc.settings.mailboxes)})), \
        (400 if error else 200)


@bp.post("/reexamine")
def reexamine() -> Any:
    """Run every unmatched message through the rules again."""
    return act(lambda: actions.reexamine(service()), "Re-examining {result} unmatched message(s).",
               url_for("rules.index"))
