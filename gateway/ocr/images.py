"""Photos and scans sent as images: which are documents, and their lossless conversion to PDF.

An image is a document only when a hot folder delivers it or a rule says
images count (``import: images``, or ``attachments:`` naming its type), and
then only when it is large enough to be a photo or scan of a page: a logo,
an icon or a signature (under ``ocr.min_image_size`` bytes, or under
``ocr.min_image_pixels`` on a side) never is. The conversion is img2pdf's:
the JPEG or PNG data is put into the PDF as it is, with no re-encoding.
HEIC (iPhone photos) is decoded by Debian's ``heif-convert`` (libheif) to
PNG first, when that program is installed.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

from gateway.config import OcrConfig

# First bytes of the image formats taken: (magic, offset, type)
_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "png"),
    (b"II*\x00", 0, "tiff"),
    (b"MM\x00*", 0, "tiff"),
)
_HEIC_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"mif1", b"msf1", b"hevc", b"hevx")
HEIF_CONVERT = "heif-convert"
HEIF_TIMEOUT = 60.0


def image_type(data: bytes) -> str | None:
    """The type of an image by its first bytes (jpeg, png, tiff, heic), or None."""
    for magic, offset, kind in _MAGIC:
        if data[offset:offset + len(magic)] == magic:
            return kind
    if data[4:8] == b"ftyp" and data[8:12] in _HEIC_BRANDS:
        return "heic"
    return None


@dataclass(frozen=True)
class ImageVerdict:
    """Whether an image is a photo or scan of a document.

    Attributes:
        kind: jpeg, png, tiff or heic (None: not an image taken).
        width: pixels across (0 when unknown: HEIC before decoding).
        height: pixels down.
        document: True when it is large enough to be a page.
        reason: why it is not a document ("" when it is).
    """

    kind: str | None
    width: int
    height: int
    document: bool
    reason: str


def _size(n: int) -> str:
    return f"{n / 1024:.0f} KB" if n < 1024**2 else f"{n / 1024**2:.1f} MB"


def judge_image(data: bytes, config: OcrConfig) -> ImageVerdict:
    """Whether ``data`` is a photo or scan of a document, by its type, bytes and pixels."""
    kind = image_type(data)
    if kind is None:
        return ImageVerdict(None, 0, 0, False, "not a JPEG, PNG, TIFF or HEIC image")
    if len(data) < config.min_image_size:
        return ImageVerdict(kind, 0, 0, False, f"an image of {_size(len(data))}, under ocr.min_image_size "
                            f"({_size(config.min_image_size)}): a logo or icon, not a document")
    if kind == "heic":
        if shutil.which(HEIF_CONVERT) is None:
            return ImageVerdict(kind, 0, 0, False, "a HEIC photo, and heif-convert (Debian's libheif-examples) "
                                "is not installed to read it; send it as JPEG")
        return ImageVerdict(kind, 0, 0, True, "")
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning: the bound is checked below
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size
    except Exception as exc:  # a damaged image: it says so, and it is left out
        return ImageVerdict(kind, 0, 0, False, f"the {kind.upper()} image cannot be read ({exc})")
    if min(width, height) < config.min_image_pixels:
        return ImageVerdict(kind, width, height, False, f"an image of {width}×{height} px, under "
                            f"ocr.min_image_pixels ({config.min_image_pixels}): a logo or icon, not a document")
    if width * height > config.max_image_pixels:
        return ImageVerdict(kind, width, height, False, f"an image of {width}×{height} px, over "
                            f"ocr.max_image_pixels ({config.max_image_pixels})")
    return ImageVerdict(kind, width, height, True, "")


def to_pdf(data: bytes, config: OcrConfig) -> bytes:
    """A PDF holding the image (each frame of a TIFF a page), losslessly; ValueError when it cannot be made."""
    import img2pdf
    from PIL import Image

    # the same image makes the same PDF, byte for byte (no date, img2pdf's own writer, no random /ID):
    # a photo sent twice is one document
    _SAME_BYTES = {"nodate": True, "engine": img2pdf.Engine.internal, "rotation": img2pdf.Rotation.ifvalid}
    kind = image_type(data)
    if kind == "heic":
        data = _heic_to_png(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return bytes(img2pdf.convert(data, **_SAME_BYTES))
    except img2pdf.AlphaChannelError:
        pass  # img2pdf refuses transparency: flattened on white below, still lossless PNG
    except Exception as exc:
        raise ValueError(f"the image cannot be made into a PDF: {exc}") from exc
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # judge_image bounded the pixels
            im = Image.open(io.BytesIO(data))
        with im:
            rgba = im.convert("RGBA")
            flat = Image.new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, mask=rgba.getchannel("A"))
            out = io.BytesIO()
            flat.save(out, "PNG")
        return bytes(img2pdf.convert(out.getvalue(), **_SAME_BYTES))
    except Exception as exc:
        raise ValueError(f"the image cannot be made into a PDF: {exc}") from exc


def _heic_to_png(data: bytes) -> bytes:
    """A HEIC photo decoded to PNG by Debian's heif-convert (libheif), in a child process."""
    exe = shutil.which(HEIF_CONVERT)
    if exe is None:
        raise ValueError("HEIC photos need heif-convert (Debian's libheif-examples)")
    with tempfile.TemporaryDirectory(prefix="gateway-heic-") as tmp:
        src, dst = Path(tmp) / "in.heic", Path(tmp) / "out.png"
        src.write_bytes(data)
        try:
            proc = subprocess.run([exe, str(src), str(dst)], capture_output=True, timeout=HEIF_TIMEOUT, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ValueError(f"decoding the HEIC photo took longer than {HEIF_TIMEOUT:.0f} s") from exc
        if proc.returncode != 0 or not dst.exists():
            # heif-convert names each image of a sequence out-1.png, out-2.png...
            first = sorted(Path(tmp).glob("out*.png"))
            if proc.returncode != 0 or not first:
                raise ValueError(f"the HEIC photo cannot be decoded: {proc.stderr.decode(errors='replace')[:200]}")
            dst = first[0]
        return dst.read_bytes()
