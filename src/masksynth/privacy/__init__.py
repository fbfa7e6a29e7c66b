"""Anonymization you can check: the privacy audit of synthetic faces, and privacy filters."""
