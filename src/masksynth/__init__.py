"""masksynth: mask classifiers and anonymized synthetic faces from a small private photo set."""

__version__ = "0.1.0"
