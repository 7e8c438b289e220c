"""invoice-gateway: a self-hosted e-mail gateway that collects supplier invoices."""

__version__ = "0.1.0"
