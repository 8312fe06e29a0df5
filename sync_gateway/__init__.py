"""Sync gateway: moves offline device transactions into an ERP exactly once and ERP data back to devices."""

__version__ = "0.1.0"
