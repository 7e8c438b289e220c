"""``python -m gateway`` is the same program as ``invoice-gateway``."""

from gateway.cli import main

main()
