"""Data ingestion and the prepared cache (`load_split`) that later stages train from."""

from masksynth.data.cache import SplitData, load_split

__all__ = ["SplitData", "load_split"]
