"""Which folders of a mailbox to watch: the configured names, or ``"*"`` for all that hold received mail."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

# "*" leaves out these SPECIAL-USE folders (Gmail's All Mail, Starred and Important would repeat the rest) ...
SKIP_SPECIAL = {b"\\trash", b"\\junk", b"\\drafts", b"\\sent", b"\\all", b"\\flagged", b"\\important"}
# ... and, for servers without SPECIAL-USE, these names
SKIP_NAMES = {"trash", "deleted items", "deleted messages", "bin", "papierkorb", "gelöschte elemente",
              "spam", "junk", "junk e-mail", "junk email", "bulk mail", "drafts", "entwürfe", "sent",
              "sent items", "sent messages", "sent mail", "gesendet", "gesendete elemente", "outbox",
              "postausgang", "all mail", "starred", "important"}


def resolve_folders(listing: Iterable[tuple[Sequence[bytes], Any, Any]], wanted: Sequence[str], *,
                    exclude: str | None = None) -> tuple[list[str], list[tuple[str, str]]]:
    """The folders to poll from a LIST answer, and the missing ones as (name, the server's folders).

    ``"*"`` takes every selectable folder but trash, spam, drafts, sent and
    Gmail's virtual ones (and ``exclude``, the after_import move target);
    INBOX matches in any case, other names exactly.
    """
    selectable: dict[str, set[bytes]] = {}
    for attributes, _, name in listing:
        low = {bytes(f).lower() for f in attributes}
        if b"\\noselect" in low or b"\\nonexistent" in low:
            continue
        selectable[str(name)] = low
    out: list[str] = []
    missing: list[tuple[str, str]] = []
    inbox = next((n for n in selectable if n.upper() == "INBOX"), None)
    for want in wanted:
        if want == "*":
            for name, flags in selectable.items():
                leaf = name.rsplit("/", 1)[-1].rsplit(".", 1)[-1].lower()
                if not (flags & SKIP_SPECIAL or leaf in SKIP_NAMES or name == exclude):
                    out.append(name)
        elif want in selectable:
            out.append(want)
        elif want.upper() == "INBOX" and inbox is not None:
            out.append(inbox)
        else:
            missing.append((want, ", ".join(sorted(selectable)) or "none"))
    return list(dict.fromkeys(out)), missing
