"""A sorted list of nodes' free room that finds the tightest fit without a linear scan.

Entries are ``(free cpu, free memory, name, number)`` tuples kept in that order,
which is the best-fit order among nodes with equal free GPUs.  The best node
for a task is the first entry at or after ``(cpu needed,)`` whose memory is
also enough.  With one flat list, nodes that have CPU left but no memory (common
when jobs are memory-heavy) pile up in front and every search walks over them:
a 5,000-node cluster then costs thousands of steps per task.  So the list is
cut into chunks of about ``CHUNK`` entries, each remembering a bound on its largest
free memory, and a search skips any chunk that cannot hold the task.  This is the
same idea as ``sortedcontainers.SortedList`` plus one aggregate per chunk.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator
from operator import itemgetter

__all__ = ["CHUNK", "Entry", "FitList"]

Entry = tuple[int, int, str, int]  # free cpu, free memory, node name, node number

CHUNK = 64
_memory_of = itemgetter(1)


class FitList:
    """Entries in ascending order, in chunks that bound their largest free memory."""

    __slots__ = ("_chunks", "_firsts", "_memory", "_size")

    def __init__(self) -> None:
        self._chunks: list[list[Entry]] = []
        self._firsts: list[Entry] = []  # first entry of each chunk, for bisect
        # At least the largest free memory in each chunk (exact after a split, or after a
        # search found nothing in it; removals leave it as it was).
        self._memory: list[int] = []
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def entries(self) -> list[Entry]:
        """All entries in order (for tests and debugging)."""
        return [entry for chunk in self._chunks for entry in chunk]

    def numbers(self) -> Iterator[int]:
        """The entries' node numbers, in order."""
        for chunk in self._chunks:
            for entry in chunk:
                yield entry[3]

    def add(self, entry: Entry) -> None:
        self._size += 1
        if not self._chunks:
            self._chunks.append([entry])
            self._firsts.append(entry)
            self._memory.append(entry[1])
            return
        i = bisect_right(self._firsts, entry) - 1
        i = max(i, 0)
        chunk = self._chunks[i]
        insort(chunk, entry)
        self._firsts[i] = chunk[0]
        self._memory[i] = max(self._memory[i], entry[1])
        if len(chunk) > 2 * CHUNK:
            tail = chunk[CHUNK:]
            del chunk[CHUNK:]
            self._chunks.insert(i + 1, tail)
            self._firsts.insert(i + 1, tail[0])
            self._memory[i] = max(map(_memory_of, chunk))
            self._memory.insert(i + 1, max(map(_memory_of, tail)))

    def remove(self, entry: Entry) -> None:
        """Remove ``entry``, which must be present."""
        i = bisect_right(self._firsts, entry) - 1
        i = max(i, 0)
        chunk = self._chunks[i]
        j = bisect_left(chunk, entry)
        if j == len(chunk) or chunk[j] != entry:
            raise KeyError(entry)
        del chunk[j]
        self._size -= 1
        if not chunk:
            del self._chunks[i], self._firsts[i], self._memory[i]
            return
        self._firsts[i] = chunk[0]
        # The chunk's largest memory is left as it was, an upper bound (a search may look
        # into the chunk in vain, and then tightens it): recomputed here, it cost a scan of
        # the chunk for most removals, as most nodes have all their memory free.

    def first_fit(self, cpu: int, memory: int) -> Entry | None:
        """The first entry with free cpu >= ``cpu`` and free memory >= ``memory``."""
        key = (cpu,)
        chunks, maxima = self._chunks, self._memory
        start = max(0, bisect_left(self._firsts, key) - 1)
        for c in range(start, len(chunks)):
            if maxima[c] < memory:
                continue
            chunk = chunks[c]
            for k in range(bisect_left(chunk, key) if c == start else 0, len(chunk)):
                entry = chunk[k]
                if entry[1] >= memory:
                    return entry
            maxima[c] = max(map(_memory_of, chunk))  # it was above the truth: tighten it
        return None
