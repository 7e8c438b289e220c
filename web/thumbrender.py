"""Render a PDF's page (the first unless told) to PNG; run as a child process by web.thumbs.

Usage: python -I thumbrender.py SRC.pdf DST.png WIDTH MEMORY_BYTES [PAGE]

Runs apart from the gateway because the PDF is untrusted input: a crash or a
runaway page stays in this process, under a memory limit and a timeout.
Prints the page count as JSON on success.
"""

from __future__ import annotations

import json
import os
import resource
import sys


def main(argv: list[str]) -> int:
    """Render page ``argv[4]`` (default 1) of ``argv[0]`` at ``argv[2]`` px wide into ``argv[1]``."""
    src, dst, width, memory = argv[0], argv[1], int(argv[2]), int(argv[3])
    number = int(argv[4]) if len(argv) > 4 else 1
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(src)
    try:
        pages = len(pdf)
        if pages == 0:
            print(json.dumps({"pages": 0}))
            return 3
        if not 1 <= number <= pages:
            print(json.dumps({"pages": pages}))
            return 4
        page = pdf[number - 1]
        scale = min(4.0, width / max(1.0, page.get_width()))
        image = page.render(scale=scale, may_draw_forms=True).to_pil()
        tmp = f"{dst}.{os.getpid()}.tmp"
        image.save(tmp, format="PNG", optimize=True)
        os.replace(tmp, dst)
    finally:
        pdf.close()
    print(json.dumps({"pages": pages}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
