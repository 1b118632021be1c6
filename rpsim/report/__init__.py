"""Turning results into text and files: tables, JSON, CSV, atomic writes. No simulation logic here."""
