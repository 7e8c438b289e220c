"""Which attachments a rule's ``attachments:`` globs import: documents, named types, never programs.

Documents are PDF and XML files (judged by their bytes), and with ``import:
images`` photos and scans (JPEG, PNG, TIFF, HEIC). A glob imports
another file only when it names the file's type: its extension written out
(``*.docx`` names .docx; ``*``, ``*.*`` and ``invoice*`` name none).
Executables and scripts are never imported, whatever a rule says: by
extension (``EXECUTABLE_EXTENSIONS``) or by their first bytes (Windows PE
``MZ``, ELF, Mach-O, a ``#!`` script).
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.models import Attachment
from gateway.rules.matcher import glob_regex

# Programs, scripts, installers and shortcuts of Windows, macOS, Linux and Android.
EXECUTABLE_EXTENSIONS = frozenset({
    "exe", "dll", "com", "scr", "pif", "cpl", "sys", "drv", "ocx", "msi", "msp", "mst", "msc", "bat", "cmd",
    "ps1", "psm1", "psd1", "vbs", "vbe", "js", "jse", "wsf", "wsh", "wsc", "hta", "lnk", "url", "reg", "inf",
    "scf", "gadget", "application", "appref-ms", "jar", "class", "apk", "xapk", "app", "pkg", "dmg", "command",
    "scpt", "applescript", "workflow", "sh", "bash", "zsh", "csh", "ksh", "run", "bin", "elf", "so", "dylib",
    "py", "pyc", "pyw", "pl", "rb", "php", "deb", "rpm", "appimage", "xll", "iqy", "settingcontent-ms",
})
# First bytes of executable formats: (magic, what it is).
EXECUTABLE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"MZ", "a Windows program (MZ)"),
    (b"\x7fELF", "a Linux program (ELF)"),
    (b"\xfe\xed\xfa\xce", "a macOS program (Mach-O)"),
    (b"\xfe\xed\xfa\xcf", "a macOS program (Mach-O)"),
    (b"\xce\xfa\xed\xfe", "a macOS program (Mach-O)"),
    (b"\xcf\xfa\xed\xfe", "a macOS program (Mach-O)"),
    (b"\xca\xfe\xba\xbe", "a macOS universal program or a Java class (Mach-O fat)"),
    (b"#!", "a script (#!)"),
)


def extension(filename: str) -> str:
    """The lower-case extension of a file name ("" when it has none)."""
    stem, dot, ext = filename.rpartition(".")
    return ext.lower() if dot and stem else ""


def executable(att: Attachment) -> str:
    """What kind of program an attachment is ("" when it is none), by its extension or first bytes."""
    for magic, what in EXECUTABLE_MAGIC:
        if att.data.startswith(magic):
            return what
    for name in (att.filename, att.original_filename or ""):
        ext = extension(name.strip().rstrip(". "))
        if ext in EXECUTABLE_EXTENSIONS:
            return f"a program or script (.{ext})"
    return ""


def names_type(glob: str, filename: str) -> bool:
    """Whether ``glob`` writes out the extension of ``filename`` (``*.docx`` for ``a.docx``; ``*`` never)."""
    ext = extension(glob)
    return bool(ext) and "*" not in ext and "?" not in ext and ext == extension(filename)


def choose(attachments: Sequence[Attachment], globs: Sequence[str], *,
           images: bool = False) -> tuple[list[Attachment], list[str]]:
    """The attachments ``globs`` import, and why each other one they matched was left out.

    ``images``: photos and scans count as documents (``import: images``, a hot folder), as PDFs do.
    """
    from gateway.ocr.images import image_type

    rxs = [(g, glob_regex(g)) for g in globs]
    chosen: list[Attachment] = []
    skipped: list[str] = []
    for att in attachments:
        matched = [g for g, rx in rxs if rx.fullmatch(att.filename)]
        if not matched or not att.data:
            continue
        program = executable(att)
        if program:
            skipped.append(f"{att.filename}: not imported: {program}; executables are never imported")
        elif (att.kind in ("pdf", "xml") or any(names_type(g, att.filename) for g in matched)
              or (images and image_type(att.data))):
            chosen.append(att)
        else:
            ext = extension(att.filename)
            example = f'"*.{ext}"' if ext else "its exact file name"
            skipped.append(f"{att.filename}: not imported: not a PDF or XML file, and attachments: "
                           f"{', '.join(matched)} does not name its type (write {example} to import it)")
    return chosen, skipped
