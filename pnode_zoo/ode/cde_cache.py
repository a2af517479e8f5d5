"""A per-sample cache of a parareal solve's boundary states, with a hard memory bound."""

from __future__ import annotations

from collections import OrderedDict

import torch

from pnode_zoo.errors import UserInputError

__all__ = ["WarmStartCache"]


class WarmStartCache:
    """Boundary states [rows, *state] of each sample, keyed by the sample's index in its data
    set, least recently used evicted first.

    Memory bound: the states live in one tensor of at most ``max_bytes // entry_bytes`` entries
    (``entry_bytes`` = rows x state numbers x element size), grown by doubling up to that, so
    ``nbytes <= max_bytes`` always; the key-to-slot table adds about 100 bytes of Python per
    entry, not counted. An entry of another shape, dtype or device than the cache holds (the
    model or its slices changed) empties the cache: a look-up of it is a miss.

    Args:
        max_bytes: bound on the cached states' bytes (0 disables the cache).

    Attributes:
        hits: look-ups that found an entry, since construction.
        lookups: look-ups since construction.
    """

    def __init__(self, max_bytes: int) -> None:
        if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 0:
            raise UserInputError(f"cache_bytes must be an integer >= 0, got {max_bytes!r}")
        self.max_bytes = max_bytes
        self._slots: OrderedDict[int, int] = OrderedDict()
        self._store: torch.Tensor | None = None
        self._limit = 0  # entries allowed for the current entry shape
        self.hits = self.lookups = 0

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def nbytes(self) -> int:
        """Bytes of the tensor holding the states."""
        store = self._store
        return 0 if store is None else store.numel() * store.element_size()

    @property
    def capacity(self) -> int:
        """Entries the bound allows for the shape cached now (0 before the first store)."""
        return self._limit

    def lookup(
        self, index: torch.Tensor, like: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(found [batch] bool, states [rows, found, *state] of the found samples, in order).

        Args:
            index: the samples' keys, [batch] integers.
            like: the states a hit must match, [rows, batch, *state] (shape, dtype, device).
        """
        keys = index.tolist()
        self.lookups += len(keys)
        found = torch.zeros(len(keys), dtype=torch.bool)
        if not self._fits(like):
            return found, None
        slots = []
        for position, key in enumerate(keys):
            slot = self._slots.get(key)
            if slot is not None:
                self._slots.move_to_end(key)
                found[position] = True
                slots.append(slot)
        self.hits += len(slots)
        if not slots:
            return found, None
        values = self._store[torch.tensor(slots, device=self._store.device)]
        return found, values.transpose(0, 1)

    def store(self, index: torch.Tensor, states: torch.Tensor) -> None:
        """Cache states [rows, batch, *state] (detached) under the keys index [batch]."""
        if not self._fits(states):
            self.clear()
            entry = states[:, 0].numel() * states.element_size()
            self._limit = self.max_bytes // max(entry, 1)
            self._store = states.new_empty((0, states.shape[0], *states.shape[2:]))
        if self._limit == 0:
            return
        keys = index.tolist()
        rows = states.detach().transpose(0, 1)
        # only the last ``_limit`` samples of a batch larger than the cache can stay
        start = max(len(keys) - self._limit, 0)
        slots = [self._slot(key) for key in keys[start:]]
        self._store[torch.tensor(slots, device=rows.device)] = rows[start:]

    def clear(self) -> None:
        """Drop every entry and free the states."""
        self._slots.clear()
        self._store, self._limit = None, 0

    def _fits(self, states: torch.Tensor) -> bool:
        store = self._store
        return (store is not None and store.shape[1:] == (states.shape[0], *states.shape[2:])
                and store.dtype == states.dtype and store.device == states.device)

    def _slot(self, key: int) -> int:
        if key in self._slots:
            self._slots.move_to_end(key)
            return self._slots[key]
        if len(self._slots) >= self._limit:
            _, slot = self._slots.popitem(last=False)
        else:
            slot = len(self._slots)
            self._grow(slot + 1)
        self._slots[key] = slot
        return slot

    def _grow(self, needed: int) -> None:
        store = self._store
        if store.shape[0] >= needed:
            return
        size = min(self._limit, max(needed, 2 * store.shape[0]))
        grown = store.new_empty((size, *store.shape[1:]))
        grown[: store.shape[0]] = store
        self._store = grown
