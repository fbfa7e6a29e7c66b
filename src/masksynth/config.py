"""Configuration dataclasses, saved with every run so a run folder explains itself."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class PrepareConfig:
    """Everything that decides what `prepare` produces (worker count aside)."""

    positive_class: str = "without_mask"  # the paper's convention for sensitivity
    sizes: tuple[int, ...] = (64, 128)
    split: tuple[float, float, float] = (0.7, 0.1, 0.2)
    seed: int = 0
    group_by: str | None = None  # regex; its first group names who/what must not straddle splits
    face_crop: bool = True
    face_margin: float = 0.1  # added to each side of the face box, as a share of its size
    face_threshold: float = 0.6  # YuNet score; 0.6 finds ~95 % of masked faces on the dev set
    near_dup_bits: int = 8  # pHash Hamming distance that groups two images as near copies
    min_side: int = 24  # smaller images are rejected
    max_pixels: int = 64_000_000  # larger images are rejected as decompression bombs
    alpha_background: tuple[int, int, int] = (255, 255, 255)  # transparent pixels become white
    workers: int = field(default=0, compare=False)  # 0: one per CPU core; not part of the result

    def to_dict(self) -> dict:
        return asdict(self)
