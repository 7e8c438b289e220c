"""Pydantic models of a rule file: they validate rule files and give the JSON Schema."""

from __future__ import annotations

import difflib
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, StrictInt, WithJsonSchema
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, models_json_schema
from pydantic_core import PydanticCustomError, core_schema

# The order in which the keys of a `when` mapping are checked; a miss names
# the first one that failed. Sender first: it is the most selective.
CONDITION_KEYS: tuple[str, ...] = (
    "from", "to", "forwarded_from", "source", "authenticated", "has_attachment", "attachment", "einvoice",
    "header", "subject", "contains", "body",
    "supplier", "company", "document_type", "currency", "invoice_number", "total", "amount_due",
    "all", "any", "not",
)
#: Conditions on the fields read from the mail's documents (gateway.fields); each holds when any document satisfies it.
FIELD_CONDITIONS: tuple[str, ...] = (
    "supplier", "company", "document_type", "currency", "invoice_number", "total", "amount_due",
)
# The same as gateway.fields.DOCUMENT_TYPES (a test keeps them equal); not imported, as EINVOICE_FIELDS.
DOCUMENT_TYPES: tuple[str, ...] = (
    "invoice", "credit_note", "receipt", "reminder", "order_confirmation", "statement", "delivery_note", "other",
)
RULE_KEYS: tuple[str, ...] = ("name", "when", "action", "import", "attachments", "assign", "priority")
ASSIGN_KEYS: tuple[str, ...] = ("company", "document_type", "tags", "note")
# The same as gateway.einvoice.FIELD_KEYS (a test keeps them equal); not
# imported, so that checking rules does not load the e-invoice machinery.
EINVOICE_FIELDS: tuple[str, ...] = (
    "invoice_number", "type_code", "document_type", "issue_date", "due_date", "seller", "seller_vat_id",
    "buyer", "buyer_reference", "currency", "net_total", "tax_total", "grand_total", "amount_due", "iban",
    "syntax", "profile",
)
PLACEHOLDERS: tuple[str, ...] = (
    "subject", "sender", "sender_name", "sender_domain", "tag", "import_address", "source", "date",
    "forwarded_from", "forwarded_from_name",
    *(f"einvoice.{name}" for name in EINVOICE_FIELDS),
)

_TEXT_SCHEMA: dict[str, Any] = {"type": ["string", "integer"], "minLength": 1}
PATTERNS_SCHEMA: dict[str, Any] = {
    "anyOf": [_TEXT_SCHEMA, {"type": "array", "items": _TEXT_SCHEMA, "minItems": 1}],
}


def _text(value: object) -> str:
    if isinstance(value, bool):
        raise PydanticCustomError("text", "must be text, not true/false (YAML reads yes, no, on, off as true/false: quote it)")
    if isinstance(value, int):
        return str(value)
    if not isinstance(value, str):
        raise PydanticCustomError("text", "must be text or a list of text")
    return value


def _inner(exc: PydanticCustomError, *prefix: str | int) -> PydanticCustomError:
    """The same error, with its place inside the value (ctx ``path``) extended at the front."""
    ctx = exc.context or {}
    return PydanticCustomError(exc.type, exc.message(), {"path": [*prefix, *ctx.get("path", [])]})


def _patterns(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        return (_text(value),)
    if not value:
        raise PydanticCustomError("patterns", "must not be an empty list")
    out = []
    for i, item in enumerate(value):
        try:
            out.append(_text(item))
        except PydanticCustomError as exc:
            raise _inner(exc, i) from None
    return tuple(out)


def _flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise PydanticCustomError("flag", "must be true or false")
    return value


def _headers(value: object) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, dict) or not value:
        raise PydanticCustomError("header", "must be a mapping of header names to values, e.g. {X-Mailer: Billing}")
    out: dict[str, tuple[str, ...]] = {}
    for key, item in value.items():
        if not isinstance(key, str):
            raise PydanticCustomError("header", "a header name must be text", {"path": [str(key)]})
        try:
            out[key] = _patterns(item)
        except PydanticCustomError as exc:
            raise _inner(exc, key) from None
    return out


def _einvoice(value: object) -> bool | dict[str, tuple[str, ...]]:
    if isinstance(value, bool):
        return value
    if not isinstance(value, dict) or not value:
        raise PydanticCustomError("einvoice", "must be true, false or a mapping of e-invoice fields to values")
    out: dict[str, tuple[str, ...]] = {}
    for key, item in value.items():
        if key not in EINVOICE_FIELDS:
            close = difflib.get_close_matches(str(key), EINVOICE_FIELDS, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise PydanticCustomError(
                "einvoice", "unknown e-invoice field; allowed: " + ", ".join(EINVOICE_FIELDS) + hint,
                {"path": [str(key)]})
        try:
            out[key] = _patterns(item)
        except PydanticCustomError as exc:
            raise _inner(exc, key) from None
    return out


def _document_types(value: object) -> tuple[str, ...]:
    out = []
    for i, raw in enumerate(_patterns(value)):
        name = "_".join(raw.strip().casefold().replace("-", " ").split())
        if name not in DOCUMENT_TYPES:
            close = difflib.get_close_matches(name, DOCUMENT_TYPES, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise PydanticCustomError(
                "document_type", f"{raw!r} is not a document type; allowed: {', '.join(DOCUMENT_TYPES)}{hint}",
                {"path": [i] if isinstance(value, list) else []})
        out.append(name)
    return tuple(out)


def _currencies(value: object) -> tuple[str, ...]:
    out = []
    for i, raw in enumerate(_patterns(value)):
        code = raw.strip().upper()
        if len(code) != 3 or not code.isascii() or not code.isalpha():
            raise PydanticCustomError(
                "currency", f"{raw!r} is not a currency code; write the three letters (EUR, USD, CHF)",
                {"path": [i] if isinstance(value, list) else []})
        out.append(code)
    return tuple(out)


def _amount(value: object, key: str) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise PydanticCustomError("range", "must be a number such as 10 or 499.99", {"path": [key]})
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        amount = Decimal("NaN")
    if not amount.is_finite():
        raise PydanticCustomError("range", f"{value!r} is not a number; write it as 10 or 499.99 (a point "
                                           "before the cents, no currency)", {"path": [key]})
    return amount


def _range(value: object) -> tuple[Decimal | None, Decimal | None]:
    if not isinstance(value, dict) or not value:
        raise PydanticCustomError("range", "must be a range such as {min: 10, max: 500} (min, max or both)")
    for key in value:
        if key not in ("min", "max"):
            raise PydanticCustomError("range", "unknown key; allowed: min, max", {"path": [str(key)]})
    low = _amount(value["min"], "min") if "min" in value else None
    high = _amount(value["max"], "max") if "max" in value else None
    if low is not None and high is not None and low > high:
        raise PydanticCustomError("range", f"min {low} is above max {high}")
    return low, high


Patterns = Annotated[tuple[str, ...] | None, PlainValidator(_patterns), WithJsonSchema(PATTERNS_SCHEMA)]
Flag = Annotated[bool | None, PlainValidator(_flag), WithJsonSchema({"type": "boolean"})]
Headers = Annotated[
    dict[str, tuple[str, ...]] | None, PlainValidator(_headers),
    WithJsonSchema({"type": "object", "minProperties": 1, "additionalProperties": PATTERNS_SCHEMA}),
]
EInvoice = Annotated[
    bool | dict[str, tuple[str, ...]] | None, PlainValidator(_einvoice),
    WithJsonSchema({"anyOf": [
        {"type": "boolean"},
        {"type": "object", "minProperties": 1, "additionalProperties": False,
         "properties": {name: PATTERNS_SCHEMA for name in EINVOICE_FIELDS}},
    ]}),
]


DocumentTypes = Annotated[
    tuple[str, ...] | None, PlainValidator(_document_types),
    WithJsonSchema({"anyOf": [{"enum": list(DOCUMENT_TYPES)},
                              {"type": "array", "items": {"enum": list(DOCUMENT_TYPES)}, "minItems": 1}]}),
]
Currencies = Annotated[
    tuple[str, ...] | None, PlainValidator(_currencies),
    WithJsonSchema({"anyOf": [{"type": "string", "pattern": "^[A-Za-z]{3}$"},
                              {"type": "array", "items": {"type": "string", "pattern": "^[A-Za-z]{3}$"},
                               "minItems": 1}]}),
]
_AMOUNT_SCHEMA: dict[str, Any] = {"type": ["number", "string"]}
Range = Annotated[
    tuple[Decimal | None, Decimal | None] | None, PlainValidator(_range),
    WithJsonSchema({"type": "object", "minProperties": 1, "additionalProperties": False,
                    "properties": {"min": _AMOUNT_SCHEMA, "max": _AMOUNT_SCHEMA}}),
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=False)


class WhenModel(_Model):
    """Conditions of a rule: every key given must hold."""

    model_config = ConfigDict(title="Conditions")

    from_: Patterns = Field(None, alias="from", description=(
        "Sender. With @: a whole address (billing@acme.example), @domain a whole domain "
        "(@acme.example; @*.acme.example its subdomains), * and ? a glob. "
        "Without @: part of the display name or address. re: a regular expression."))
    to: Patterns = Field(None, description="A recipient (To, Cc or envelope); same forms as from.")
    forwarded_from: Patterns = Field(None, description=(
        "The original sender of a forwarded mail (the From of an attached message, or of the forwarded "
        "header block in the body); same forms as from. A hint about content, never proof of the sender."))
    source: Patterns = Field(None, description=(
        "How the mail came in: smtp, import, imap (any mailbox), imap:<mailbox>, folder:<name>, "
        "or an import address such as invoices+acme@home.example."))
    authenticated: Flag = Field(None, description=(
        "true: the sender passed DMARC or aligned DKIM; false: it failed. Unknown satisfies neither."))
    has_attachment: Flag = Field(None, description="Whether the mail has any attachment.")
    attachment: Patterns = Field(None, description="An attachment file name: text, glob (*.pdf) or re:.")
    einvoice: EInvoice = Field(None, description=(
        "true: the mail carries an e-invoice (false: it does not); or e-invoice fields with values to match."))
    header: Headers = Field(None, description="Header names with values to match, e.g. {List-Id: news}.")
    subject: Patterns = Field(None, description="Subject: text (part of it), glob over the whole subject, or re:.")
    contains: Patterns = Field(None, description="Text in the subject or the body.")
    body: Patterns = Field(None, description="Text in the body.")
    supplier: Patterns = Field(None, description=(
        "The seller read from a document of the mail (or the company its import address assigns): "
        "text (part of the name), glob (Acme*) or re:; case-insensitive."))
    company: Patterns = Field(None, description="The same as supplier.")
    document_type: DocumentTypes = Field(None, description=(
        "A document's type: " + ", ".join(DOCUMENT_TYPES) + " (one, or a list)."))
    currency: Currencies = Field(None, description="A document's currency: EUR, USD, ... (one, or a list).")
    invoice_number: Patterns = Field(None, description="A document's invoice number: text, glob or re:.")
    total: Range = Field(None, description=(
        "A document's total (grand total, else amount due) in a range: {min: 10, max: 500}; min and max included."))
    amount_due: Range = Field(None, description="A document's amount due in a range: {min: 10, max: 500}.")
    all_: list[WhenModel] | None = Field(None, alias="all", min_length=1, description="Every condition must hold.")
    any_: list[WhenModel] | None = Field(None, alias="any", min_length=1, description="At least one must hold.")
    not_: WhenModel | None = Field(None, alias="not", description="The conditions must not hold.")


class AssignModel(_Model):
    """What a matching rule assigns to the documents; text may use {placeholders}."""

    model_config = ConfigDict(title="Assign")

    company: str | None = Field(None, min_length=1, description="Company name, e.g. \"{einvoice.seller}\".")
    document_type: str | None = Field(None, min_length=1, description="invoice, receipt, credit_note, ...")
    tags: Patterns = Field(None, description="Tags added to the documents (one, or a list).")
    note: str | None = Field(None, min_length=1, description="A note stored with the documents.")


class RuleModel(_Model):
    """One import rule."""

    model_config = ConfigDict(title="Rule")

    name: str = Field(min_length=1, description="Unique across all rule files.")
    when: WhenModel = Field(description="Conditions; every key must hold. {} matches every mail.")
    action: Literal["import", "ignore"] = Field("import", description="import (default) or ignore.")
    import_: Literal["attachments", "body", "both", "images"] = Field("attachments", alias="import", description=(
        "attachments (default), body (render the mail itself to PDF), both, or images (the attachments, "
        "with photos and scans sent as JPEG, PNG, TIFF or HEIC among them: each becomes a PDF read by OCR)."))
    attachments: Patterns = Field(None, description="Globs narrowing which attachments are imported (*.pdf).")
    assign: AssignModel | None = Field(None, description="company, document_type, tags, note.")
    priority: StrictInt = Field(100, description="Lower runs first (default 100); then file path, then position.")


class RuleListModel(_Model):
    """A rule file holding several rules as a list under rules:."""

    model_config = ConfigDict(title="Rule list")

    rules: list[RuleModel] = Field(description="The rules of this file, in order.")


class _SchemaGenerator(GenerateJsonSchema):
    """Leaves out null: YAML null is never a valid value in a rule file."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        out = super().default_schema(schema)
        if out.get("default", ...) is None:
            del out["default"]
        return out


def rules_schema() -> dict[str, Any]:
    """The JSON Schema of one YAML document of a rule file (for editors and CI)."""
    _, defs = models_json_schema(
        [(RuleModel, "validation"), (RuleListModel, "validation")],
        ref_template="#/$defs/{model}", schema_generator=_SchemaGenerator)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "invoice-gateway rule file",
        "description": "One rule (name, when, ...) or a list of rules under rules:. "
                       "Several YAML documents separated by --- are validated one by one.",
        "anyOf": [{"$ref": "#/$defs/RuleModel"}, {"$ref": "#/$defs/RuleListModel"}],
        **defs,
    }
