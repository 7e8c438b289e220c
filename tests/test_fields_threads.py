"""PDFium is not thread-safe: fields read in many threads at once are the fields read one by one."""

from __future__ import annotations

import threading
from typing import Any

from fieldsamples import samples
from gateway.fields import read_document


def test_fields_read_in_eight_threads_at_once_are_the_same_as_one_by_one() -> None:
    pdfs = [s.pdf for s in samples(1)]
    expected = [read_document(p, "pdf").values() for p in pdfs]
    errors: list[Any] = []

    def work(offset: int) -> None:
        try:
            for round_ in range(6):
                for i in range(len(pdfs)):
                    j = (i + offset + round_) % len(pdfs)
                    got = read_document(pdfs[j], "pdf").values()
                    if got != expected[j]:
                        errors.append((j, got))
        except Exception as exc:  # collected: an exception in a thread would pass unseen
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
