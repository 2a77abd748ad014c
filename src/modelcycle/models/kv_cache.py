"""The key / value cache of many sequences decoded together (continuous batching), shared by every language
model architecture (``gpt``, ``hf_causal_lm``).

All rows share one column pointer: a forward pass writes every row's new positions into the same columns,
so one batched matrix product serves rows of different lengths. ``valid`` marks which columns hold a row's
own positions; the rest (columns from before a row joined, or left behind by a longer row) are masked out
of attention. A row's positions (for its position embedding) are its own and do not depend on its columns.
Rows join (``join``, from a prefilled one-row cache) and leave (``leave``) between steps; when masked
columns pile up, ``compact`` packs every row's columns to the right. Buffers grow by a quarter at a time,
never far past what the rows hold, and are released when the last row leaves."""

from __future__ import annotations

import torch

GROWTH = 64  # columns allocated at least at a time


class KVCache:
    """Keys and values per layer, (rows, heads, columns, head_dim) buffers of which the first ``rows`` rows
    and ``length`` columns are in use; ``open(q)`` makes room for ``q`` new columns and gives the attention
    mask, each layer's ``write`` stores its keys / values there, ``close()`` moves the pointer past them."""

    def __init__(self, layers: int) -> None:
        self.layers = layers
        self.keys: list[torch.Tensor | None] = [None] * layers
        self.values: list[torch.Tensor | None] = [None] * layers
        self.valid = torch.zeros(0, 0, dtype=torch.bool)  # (row capacity, column capacity)
        self.rows = 0
        self.length = 0
        self.pending = 0  # columns opened for the forward pass under way

    # --- one forward pass -------------------------------------------------------------------------------
    def open(self, new: int, rows: int | None = None) -> torch.Tensor:
        """Room for ``new`` columns in every row (``rows`` sets the row count of an empty cache); returns the
        attention mask (rows, 1, new, length + new), True where a query may attend: the row's valid columns
        and, among the new ones, the causal triangle."""
        if rows is not None and self.rows == 0:
            self.rows = rows
        if self.length + new > self.valid.shape[1] and self.length > self.used_row_span():
            self.compact()  # masked columns are only waste: drop them before growing
        self._reserve(self.rows, self.length + new)
        self.valid[: self.rows, self.length : self.length + new] = True
        self.pending = new
        width = self.length + new
        mask = (
            self.valid[: self.rows, :width].unsqueeze(1).unsqueeze(2).expand(self.rows, 1, new, width).clone()
        )
        causal = torch.ones(new, new, dtype=torch.bool).tril()
        mask[:, 0, :, self.length :] &= causal
        return mask.to(self.device)

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

    # --- rows joining and leaving -----------------------------------------------------------------------
    def join(self, single: KVCache) -> int:
        """Add the one row of ``single`` (a prefilled sequence) as a new last row; its columns end at the
        shared pointer (moved on if the row is longer than the others). Returns the row's index."""
        size = single.length
        if size > self.length:  # the others get masked columns up to the new pointer
            self._reserve(self.rows + 1, size)
            self.valid[: self.rows, self.length : size] = False
            self.length = size
        else:
            self._reserve(self.rows + 1, self.length)
        row, start = self.rows, self.length - size
        self.rows += 1
        self.valid[row, :] = False
        self.valid[row, start : self.length] = True
        for layer in range(self.layers):
            keys, values = single.keys[layer], single.values[layer]
            if keys is None or values is None:
                raise ValueError("join: the single-row cache was never written")
            mine_keys, mine_values = self.keys[layer], self.values[layer]
            if mine_keys is None or mine_values is None:
                mine_keys, mine_values = self._allocate(layer, keys, values)
            mine_keys[row, :, start : self.length] = keys[0, :, :size]
            mine_values[row, :, start : self.length] = values[0, :, :size]
        return row

    def leave(self, row: int) -> int | None:
        """Drop ``row``; the last row moves into its place. Returns the index that moved (to be renamed
        ``row`` by the caller), or None. The last row leaving releases the buffers."""
        last = self.rows - 1
        moved = None
        if row != last:
            self.valid[row] = self.valid[last]
            for layer in range(self.layers):
                keys, values = self.keys[layer], self.values[layer]
                if keys is not None and values is not None:
                    keys[row] = keys[last]
                    values[row] = values[last]
            moved = last
        self.rows -= 1
        if self.rows == 0:
            self.release()
        return moved

    def release(self) -> None:
        self.keys = [None] * self.layers
        self.values = [None] * self.layers
        self.valid = torch.zeros(0, 0, dtype=torch.bool)
        self.rows = self.length = self.pending = 0

    def compact(self) -> None:
        """Pack every row's valid columns to the right of the shortest span that holds them all."""
        if self.rows == 0:
            return
        valid = self.valid[: self.rows, : self.length]
        longest = int(valid.sum(dim=1).max())
        if longest == self.length:
            return
        order = torch.sort(valid.to(torch.int8), dim=1, stable=True).indices[:, self.length - longest :]
        for layer in range(self.layers):
            keys, values = self.keys[layer], self.values[layer]
            if keys is None or values is None:
                continue
            index = order.to(keys.device)[:, None, :, None].expand(-1, keys.shape[1], -1, keys.shape[3])
            keys[: self.rows, :, :longest] = keys[: self.rows, :, : self.length].gather(2, index)
            values[: self.rows, :, :longest] = values[: self.rows, :, : self.length].gather(2, index)
        self.valid[: self.rows, :longest] = valid.gather(1, order)
        self.valid[: self.rows, longest:] = False
        self.length = longest

    # --- what it holds ----------------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        stored = next((keys for keys in self.keys if keys is not None), None)
        return stored.device if stored is not None else torch.device("cpu")

    def used_tokens(self) -> int:
        """Positions held for the rows (what the cache must keep)."""
        return int(self.valid[: self.rows, : self.length].sum())

    def allocated_tokens(self) -> int:
        """Row × column slots allocated (what the memory holds)."""
        return self.valid.numel() if self.keys[0] is not None else 0

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
        capacity_rows, capacity_columns = self.valid.shape
        if rows <= capacity_rows and columns <= capacity_columns:
            return
        new_rows = max(rows, min(2 * capacity_rows, rows + 8)) if rows > capacity_rows else capacity_rows
        new_columns = max(columns + columns // 4, GROWTH) if columns > capacity_columns else capacity_columns
        valid = torch.zeros(new_rows, new_columns, dtype=torch.bool)
        valid[:capacity_rows, :capacity_columns] = self.valid
        self.valid = valid
        for layer in range(self.layers):
            keys, values = self.keys[layer], self.values[layer]
            if keys is not None and values is not None:
                self.keys[layer] = _grown(keys, new_rows, new_columns)
                self.values[layer] = _grown(values, new_rows, new_columns)

    def used_row_span(self) -> int:
        """The most positions any row holds."""
        if self.rows == 0 or self.length == 0:
            return 0
        return int(self.valid[: self.rows, : self.length].sum(dim=1).max())

    def _allocate(
        self, layer: int, keys: torch.Tensor, values: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        rows, columns = self.valid.shape
        shape = (rows, keys.shape[1], columns)
        self.keys[layer] = torch.zeros(*shape, keys.shape[3], dtype=keys.dtype, device=keys.device)
        self.values[layer] = torch.zeros(*shape, values.shape[3], dtype=values.dtype, device=values.device)
        return self.keys[layer], self.values[layer]  # type: ignore[return-value]


def _grown(tensor: torch.Tensor, rows: int, columns: int) -> torch.Tensor:
    grown = tensor.new_zeros(rows, tensor.shape[1], columns, tensor.shape[3])
    grown[: tensor.shape[0], :, : tensor.shape[2]] = tensor
    return grown
