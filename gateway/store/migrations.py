"""The schema: ``_MIGRATIONS[n - 1]`` takes the database to version ``n`` (``PRAGMA user_version``).

Append a migration at the end, numbered in its comment; never change one that shipped.
"""

from __future__ import annotations

_MIGRATIONS: list[str] = [
    # 1: the spine
    """
    CREATE TABLE messages (
        id INTEGER PRIMARY KEY,
        received TEXT NOT NULL,
        source TEXT NOT NULL,
        origin TEXT,
        peer TEXT,
        mail_from TEXT NOT NULL DEFAULT '',
        rcpt_tos TEXT NOT NULL DEFAULT '[]',
        import_address TEXT,
        tag TEXT,
        assign TEXT NOT NULL DEFAULT '{}',
        raw_path TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 TEXT NOT NULL,
        content_hash TEXT,
        message_id TEXT,
        subject TEXT,
        sender TEXT,
        date TEXT,
        status TEXT NOT NULL DEFAULT 'received',
        reason TEXT,
        decision TEXT,
        duplicate_of INTEGER,
        auth TEXT,
        attempts INTEGER NOT NULL DEFAULT 0,
        claimed_by TEXT,
        claimed_at TEXT,
        processed_at TEXT
    );
    CREATE INDEX messages_status ON messages(status, id);
    CREATE INDEX messages_msgid ON messages(message_id);
    CREATE INDEX messages_sha ON messages(sha256);
    CREATE TABLE documents (
        id INTEGER PRIMARY KEY,
        message_id INTEGER NOT NULL REFERENCES messages(id),
        sha256 TEXT NOT NULL UNIQUE,
        filename TEXT NOT NULL,
        content_type TEXT NOT NULL,
        kind TEXT NOT NULL,
        origin TEXT NOT NULL DEFAULT 'attachment',
        parent_id INTEGER,
        size INTEGER NOT NULL,
        path TEXT NOT NULL,
        created TEXT NOT NULL,
        doc_date TEXT,
        company TEXT,
        document_type TEXT,
        invoice_number TEXT,
        tags TEXT NOT NULL DEFAULT '[]',
        note TEXT,
        einvoice TEXT,
        warnings TEXT NOT NULL DEFAULT '[]',
        approved_at TEXT,
        archived_at TEXT
    );
    CREATE TABLE message_documents (
        message_id INTEGER NOT NULL REFERENCES messages(id),
        document_id INTEGER NOT NULL REFERENCES documents(id),
        PRIMARY KEY (message_id, document_id)
    );
    CREATE TABLE exports (
        id INTEGER PRIMARY KEY,
        document_id INTEGER NOT NULL REFERENCES documents(id),
        target TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt TEXT,
        last_error TEXT,
        location TEXT,
        created TEXT NOT NULL,
        delivered_at TEXT,
        claimed_by TEXT,
        claimed_at TEXT,
        UNIQUE (document_id, target)
    );
    CREATE INDEX exports_state ON exports(target, state);
    CREATE TABLE imap_folders (
        mailbox TEXT NOT NULL,
        folder TEXT NOT NULL,
        uidvalidity INTEGER,
        last_uid INTEGER NOT NULL DEFAULT 0,
        updated TEXT,
        PRIMARY KEY (mailbox, folder)
    );
    CREATE TABLE imap_seen (
        mailbox TEXT NOT NULL,
        folder TEXT NOT NULL,
        uidvalidity INTEGER NOT NULL,
        uid INTEGER NOT NULL,
        message INTEGER,
        state TEXT NOT NULL DEFAULT 'spooled',
        PRIMARY KEY (mailbox, folder, uidvalidity, uid)
    );
    CREATE TABLE mailbox_status (
        name TEXT PRIMARY KEY,
        last_poll TEXT,
        last_success TEXT,
        last_error TEXT,
        error_kind TEXT,
        hint TEXT,
        failures INTEGER NOT NULL DEFAULT 0,
        next_attempt TEXT,
        stats TEXT NOT NULL DEFAULT '{}'
    );
    CREATE TABLE kv (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # 2: trust: releasing suspicious mail; the bank accounts seen per seller (the IBAN guard)
    """
    ALTER TABLE messages ADD COLUMN released_at TEXT;
    ALTER TABLE messages ADD COLUMN released_by TEXT;
    CREATE TABLE seller_ibans (
        seller_key TEXT NOT NULL,
        iban TEXT NOT NULL,
        message_id INTEGER NOT NULL,
        seen_at TEXT NOT NULL,
        PRIMARY KEY (seller_key, iban, message_id)
    );
    CREATE INDEX seller_ibans_key ON seller_ibans(seller_key, message_id);
    """,
    # 3: the IBAN guard's flag as a field of the document (JSON), not only a warning
    """
    ALTER TABLE documents ADD COLUMN payment_details_changed TEXT;
    """,
    # 4: admin page: each IMAP folder's last poll; a running count of failed polls per mailbox
    """
    ALTER TABLE imap_folders ADD COLUMN last_poll TEXT;
    ALTER TABLE imap_folders ADD COLUMN last_success TEXT;
    ALTER TABLE imap_folders ADD COLUMN last_error TEXT;
    ALTER TABLE imap_folders ADD COLUMN error_kind TEXT;
    ALTER TABLE imap_folders ADD COLUMN stats TEXT NOT NULL DEFAULT '{}';
    CREATE TABLE mailbox_poll_errors (
        mailbox TEXT NOT NULL,
        kind TEXT NOT NULL,
        count INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (mailbox, kind)
    );
    """,
    # 5: the IBAN guard learns a seller's account only from mail authenticated for the seller or
    # confirmed by a person (confirmed_by); the sender's organizational domain binds the seller
    """
    ALTER TABLE seller_ibans ADD COLUMN confirmed_by TEXT;
    ALTER TABLE seller_ibans ADD COLUMN sender_domain TEXT;
    """,
    # 6: the RFC822.SIZE the IMAP server reported for each mail it sent: Exchange may report a
    # stored size, not the real one, and a mail seen again is recognised by what the server says
    """
    CREATE TABLE imap_reported_sizes (
        message INTEGER PRIMARY KEY REFERENCES messages(id),
        size INTEGER NOT NULL
    );
    """,
    # 7: the admin page's log: warnings and notable events (refused recipients, known documents)
    # of serve and its worker processes, the newest EVENTS_KEPT of them
    """
    CREATE TABLE events (
        id INTEGER PRIMARY KEY,
        at TEXT NOT NULL,
        level TEXT NOT NULL,
        kind TEXT NOT NULL,
        source TEXT NOT NULL,
        text TEXT NOT NULL
    );
    CREATE INDEX events_kind ON events(kind, id);
    """,
    # 8: "import it": a person asks for an unmatched or ignored mail to be imported, whatever the rules say
    """
    ALTER TABLE messages ADD COLUMN import_requested_at TEXT;
    ALTER TABLE messages ADD COLUMN import_requested_by TEXT;
    """,
    # 9: claims: why the last holder of a claim was stopped (it names the bound a mail
    # exceeded when the mail is quarantined for it); the claims are looked up often
    """
    ALTER TABLE messages ADD COLUMN claim_error TEXT;
    CREATE INDEX messages_claimed ON messages(claimed_by) WHERE claimed_by IS NOT NULL;
    CREATE INDEX exports_claimed ON exports(claimed_by) WHERE claimed_by IS NOT NULL;
    """,
    # 10: every document's fields (gateway.fields): {"fields": {...}, "field_sources": {...}} as JSON
    """
    ALTER TABLE documents ADD COLUMN fields TEXT;
    """,
    # 11: OCR: a scan's or photo's document waits for its text layer (ocr: pending, running; then done,
    # failed); once read, sha256 is the new file's and ocr_source_sha256 the bytes that came
    """
    ALTER TABLE documents ADD COLUMN ocr TEXT;
    ALTER TABLE documents ADD COLUMN ocr_source_sha256 TEXT;
    CREATE INDEX documents_ocr ON documents(ocr, id) WHERE ocr IN ('pending', 'running');
    CREATE INDEX documents_ocr_source ON documents(ocr_source_sha256) WHERE ocr_source_sha256 IS NOT NULL;
    """,
    # 12: suppliers (gateway.fields.suppliers), learned from e-invoices and documents a person confirmed;
    # their keys (kind: vat, iban, domain, name, alias, tax) indexed for matching; each document's supplier
    """
    CREATE TABLE suppliers (
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL,
        created TEXT NOT NULL,
        updated TEXT NOT NULL,
        learned_from TEXT
    );
    CREATE TABLE supplier_keys (
        supplier_id INTEGER NOT NULL REFERENCES suppliers(id),
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        message_id INTEGER,
        document_id INTEGER,
        confirmed_by TEXT,
        seen_at TEXT NOT NULL,
        PRIMARY KEY (supplier_id, kind, value)
    );
    CREATE INDEX supplier_keys_value ON supplier_keys(kind, value);
    ALTER TABLE documents ADD COLUMN supplier_id INTEGER REFERENCES suppliers(id);
    CREATE INDEX documents_supplier ON documents(supplier_id) WHERE supplier_id IS NOT NULL;
    """,
    # 13: a person's corrections of a document's fields, kept
    # apart from what was read (a re-reading never overwrites them), with the value each replaced and
    # the document's column before it; the layouts learned from them, per supplier key and field
    """
    CREATE TABLE field_corrections (
        document_id INTEGER NOT NULL REFERENCES documents(id),
        field TEXT NOT NULL,
        value TEXT NOT NULL,
        read TEXT,
        column_before TEXT,
        corrected_by TEXT NOT NULL DEFAULT '',
        corrected_at TEXT NOT NULL,
        PRIMARY KEY (document_id, field)
    );
    CREATE TABLE learned_layouts (
        supplier_key TEXT NOT NULL,
        field TEXT NOT NULL,
        label TEXT,
        relation TEXT,
        page INTEGER,
        box TEXT,
        document_id INTEGER NOT NULL,
        learned_at TEXT NOT NULL,
        PRIMARY KEY (supplier_key, field)
    );
    CREATE INDEX learned_layouts_document ON learned_layouts(document_id);
    """,
]
