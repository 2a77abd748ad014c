"""The key / value cache of many sequences decoded together (continuous batching), shared by every language
model architecture (``gpt``, ``hf_causal_lm``).

All rows share one column pointer: a forward pass writes every row's new positions into the same columns, so
one batched matrix product serves rows of different lengths. ``owner`` says, per row and column, which
sequence the column holds (-1: none); a query attends only to its own sequence's columns (and, among the new
ones, causally). A decoding batch has one sequence per row (owner 0); a prefill packs the chunks of several
prompts into one row, each under its own owner id, so prompts of any lengths share one pass without padding.
A row's positions (for its position embedding) are its own and do not depend on its columns. Sequences join
(``join``, copied from a prefill) and leave (``leave``, ``forget``) between steps; when empty columns pile
up, ``compact`` packs every row's columns to the right. Buffers grow by a quarter at a time and are released
when the last row leaves; they hold rows × the longest row (bounded by ``serve.llm.max_running`` and the
model's context, not by the token budget)."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch

GROWTH = 64  # columns allocated at least at a time
EMPTY = -1  # the owner of a column that holds nothing


class KVCache:
    """Keys and values per layer, (rows, heads, columns, head_dim) buffers of which the first ``rows`` rows
    and ``length`` columns are in use; ``open(q)`` makes room for ``q`` new columns and gives the attention
    mask, each layer's ``write`` stores its keys / values there, ``close()`` moves the pointer past them."""

    def __init__(self, layers: int) -> None:
        self.layers = layers
        self.keys: list[torch.Tensor | None] = [None] * layers
        self.values: list[torch.Tensor | None] = [None] * layers
        self.owner = torch.full((0, 0), EMPTY, dtype=torch.int64)  # (row capacity, column capacity)
        self.rows = 0
        self.length = 0
        self.pending = 0  # columns opened for the forward pass under way

    # --- one forward pass -------------------------------------------------------------------------------
    def open(
        self,
        new: int,
        rows: int | None = None,
        owners: torch.Tensor | None = None,
        device: torch.device | None = None,
    ) -> torch.Tensor | None:
        """Room for ``new`` columns in every row (``rows`` sets the row count of an empty cache), owned by
        ``owners`` (rows, new) (default: 0, one sequence per row); returns the attention mask (rows, 1, new,
        length + new), True where a query may attend: its own sequence's earlier columns and, among the new
        ones, the causal triangle, on ``device`` (the inputs'). Every query sees at least its own column.
        None when one new column per row may attend to everything (a lone sequence decoding): attention runs
        faster without a mask."""
        if rows is not None and self.rows == 0:
            self.rows = rows
        if self.length + new > self.owner.shape[1] and self.length > self.used_row_span():
            self.compact()  # empty columns are only waste: drop them before growing
        self._reserve(self.rows, self.length + new)
        width = self.length + new
        fresh = owners if owners is not None else torch.zeros(self.rows, new, dtype=torch.int64)
        self.owner[: self.rows, self.length : width] = fresh
        self.pending = new
        held = self.owner[: self.rows, :width]
        mask = held[:, None, None, :] == fresh[:, None, :, None]
        mask[:, 0, :, self.length :] &= torch.ones(new, new, dtype=torch.bool).tril()
        if new == 1 and bool(mask.all()):
            return None
        return mask.to(device or self.device)

    def write(
        self, layer: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store one layer's keys / values (rows, heads, new, head_dim) in the opened columns; all of the
        layer's keys / values so far, (rows, heads, length + new, head_dim)."""
        stored_keys, stored_values = self.keys[layer], self.values[layer]
        if stored_keys is None or stored_values is None:
            stored_keys, stored_values = self._allocate(layer, keys, values)
        end = self.length + self.pending
        stored_keys[: self.rows, :, self.length : end] = keys
        stored_values[: self.rows, :, self.length : end] = values
        return stored_keys[: self.rows, :, :end], stored_values[: self.rows, :, :end]

    def close(self) -> None:
        self.length += self.pending
        self.pending = 0

    # --- sequences joining and leaving ------------------------------------------------------------------
    def join(self, source: KVCache, owner: int = 0, row: int = 0) -> int:
        """Add the columns ``owner`` holds in ``source``'s ``row`` (a prefilled prompt) as a new last row, in
        order, ending at the shared pointer (moved on if the row is longer than the others). Returns the new
        row's index."""
        columns = (source.owner[row, : source.length] == owner).nonzero().squeeze(1)
        size = len(columns)
        if size > self.length:  # the others get empty columns up to the new pointer
            self._reserve(self.rows + 1, size)
            self.owner[: self.rows, self.length : size] = EMPTY
            self.length = size
        else:
            self._reserve(self.rows + 1, self.length)
        new_row, start = self.rows, self.length - size
        self.rows += 1
        self.owner[new_row, :] = EMPTY
        self.owner[new_row, start : self.length] = 0
        for layer in range(self.layers):
            keys, values = source.keys[layer], source.values[layer]
            if keys is None or values is None:
                raise ValueError("join: the source cache was never written")
            mine_keys, mine_values = self.keys[layer], self.values[layer]
            if mine_keys is None or mine_values is None:
                mine_keys, mine_values = self._allocate(layer, keys, values)
            index = columns.to(keys.device)
            mine_keys[new_row, :, start : self.length] = keys[row].index_select(1, index)
            mine_values[new_row, :, start : self.length] = values[row].index_select(1, index)
        return new_row

    def forget(self, owner: int, row: int = 0) -> None:
        """Empty the columns ``owner`` holds in ``row`` (a prompt that joined the batch, or was cancelled);
        an empty cache releases its buffers."""
        held = self.owner[row, : self.length]
        held[held == owner] = EMPTY
        if not bool((self.owner[: self.rows, : self.length] != EMPTY).any()):
            self.release()
        else:
            self._shrink()

    def leave(self, row: int) -> int | None:
        """Drop ``row``; the last row moves into its place. Returns the index that moved (to be renamed
        ``row`` by the caller), or None. The last row leaving releases the buffers."""
        last = self.rows - 1
        moved = None
        if row != last:
            self.owner[row] = self.owner[last]
            for layer in range(self.layers):
                keys, values = self.keys[layer], self.values[layer]
                if keys is not None and values is not None:
                    keys[row] = keys[last]
                    values[row] = values[last]
            moved = last
        self.rows -= 1
        if self.rows == 0:
            self.release()
        else:
            self._shrink()
        return moved

    def release(self) -> None:
        self.keys = [None] * self.layers
        self.values = [None] * self.layers
        self.owner = torch.full((0, 0), EMPTY, dtype=torch.int64)
        self.rows = self.length = self.pending = 0

    def compact(self) -> None:
        """Pack every row's held columns, in order, to the right of the shortest span that holds them all."""
        if self.rows == 0:
            return
        held = self.owner[: self.rows, : self.length] != EMPTY
        longest = int(held.sum(dim=1).max())
        if longest == self.length:
            return
        order = torch.sort(held.to(torch.int8), dim=1, stable=True).indices[:, self.length - longest :]
        for layer in range(self.layers):
            keys, values = self.keys[layer], self.values[layer]
            if keys is None or values is None:
                continue
            index = order.to(keys.device)[:, None, :, None].expand(-1, keys.shape[1], -1, keys.shape[3])
            keys[: self.rows, :, :longest] = keys[: self.rows, :, : self.length].gather(2, index)
            values[: self.rows, :, :longest] = values[: self.rows, :, : self.length].gather(2, index)
        self.owner[: self.rows, :longest] = self.owner[: self.rows, : self.length].gather(1, order)
        self.owner[: self.rows, longest:] = EMPTY
        self.length = longest

    def _shrink(self) -> None:
        """Compact once more than half the columns are empty in every row: attention reads them all."""
        if 2 * self.used_row_span() < self.length:
            self.compact()

    # --- what it holds ----------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        stored = next((keys for keys in self.keys if keys is not None), None)
        return stored.device if stored is not None else torch.device("cpu")

    def used_row_span(self) -> int:
        """The most columns any row holds."""
        if self.rows == 0 or self.length == 0:
            return 0
        return int((self.owner[: self.rows, : self.length] != EMPTY).sum(dim=1).max())

    def bytes(self) -> int:
        return sum(
            tensor.numel() * tensor.element_size()
            for tensor in (*self.keys, *self.values)
            if tensor is not None
        )

    # --- buffers -----------------------------------------------------------------------------------------
    def _reserve(self, rows: int, columns: int) -> None:
        """Grow the buffers to hold ``rows`` rows and ``columns`` columns (a quarter more columns than
        needed, so that growing is rare)."""
        capacity_rows, capacity_columns = self.owner.shape
        if rows <= capacity_rows and columns <= capacity_columns:
            return
        new_rows = max(rows, min(2 * capacity_rows, rows + 8)) if rows > capacity_rows else capacity_rows
        new_columns = max(columns + columns // 4, GROWTH) if columns > capacity_columns else capacity_columns
        owner = torch.full((new_rows, new_columns), EMPTY, dtype=torch.int64)
        owner[:capacity_rows, :capacity_columns] = self.owner
        self.owner = owner
        for layer in range(self.layers):
            keys, values = self.keys[layer], self.values[layer]
            if keys is not None and values is not None:
                self.keys[layer] = _grown(keys, new_rows, new_columns)
                self.values[layer] = _grown(values, new_rows, new_columns)

    def _allocate(
        self, layer: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows, columns = self.owner.shape
        shape = (rows, keys.shape[1], columns)
        self.keys[layer] = torch.zeros(*shape, keys.shape[3], dtype=keys.dtype, device=keys.device)
        self.values[layer] = torch.zeros(*shape, values.shape[3], dtype=values.dtype, device=values.device)
        return self.keys[layer], self.values[layer]  # type: ignore[return-value]


def _grown(tensor: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
    grown = tensor.new_zeros(rows, tensor.shape[1], columns, tensor.shape[3])
    grown[: tensor.shape[0], :, : tensor.shape[2]] = tensor
    return grown


@runtime_checkable
class BatchDecoder(Protocol):
    """A language model that decodes many sequences at once over a :class:`KVCache` (``gpt``,
    ``hf_causal_lm``, and their cast variants): what the engine asks of one."""

    def decode(
        self,
        input_ids: torch.Tensor,
        positions: torch.Tensor,
        cache: KVCache,
        *,
        owners: torch.Tensor | None = None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Next-token logits (B, K, V) after the new tokens ``input_ids`` (B, T) at ``positions`` (B, T),
        read at the ``keep`` indices of T (default: the last); ``cache`` holds the sequences' earlier keys /
        values and takes the new ones (``owners``: whose each new token is, see ``KVCache.open``)."""
        ...

    def decode_layers(self) -> int:
        """How many layers keep keys / values."""
        ...

    def context_limit(self) -> int:
        """The most positions a sequence may have."""
        ...
