"""Exact duplicates (same bytes) and near duplicates (perceptual hashes a few bits apart)."""

from __future__ import annotations

from collections import defaultdict

import numpy as np


class UnionFind:
    """Disjoint sets over 0..n-1; the smallest index is each set's representative."""

    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)

    def groups(self) -> list[list[int]]:
        members = defaultdict(list)
        for i in range(len(self.parent)):
            members[self.find(i)].append(i)
        return sorted(members.values())


def exact_duplicate_groups(digests: list[str]) -> list[list[int]]:
    """Indices sharing a sha256, in groups of two or more, in input order."""
    by_digest = defaultdict(list)
    for index, digest in enumerate(digests):
        by_digest[digest].append(index)
    return sorted(group for group in by_digest.values() if len(group) > 1)


def near_duplicate_pairs(phashes: list[str], max_bits: int) -> list[tuple[int, int, int]]:
    """All pairs (i, j, distance) with i < j whose 64-bit pHashes differ in <= max_bits bits."""
    if max_bits < 0 or len(phashes) < 2:
        return []
    values = np.array([int(h, 16) for h in phashes], dtype=np.uint64)
    pairs = []
    for i in range(len(values) - 1):
        distance = np.bitwise_count(values[i + 1 :] ^ values[i])
        for offset in np.flatnonzero(distance <= max_bits):
            pairs.append((i, i + 1 + int(offset), int(distance[offset])))
    return pairs
