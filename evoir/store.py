"""The tensor store: parameter id → tensor, shared by every graph of a population.

Trainable parameters are held as ``torch.nn.Parameter`` objects and buffers (BN running
statistics) as plain tensors. A lowered module registers these very objects, so two modules
lowered from graphs that share an id share storage, gradients and optimiser updates. Passes
only ever add tensors; they never replace or edit one that exists.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

import torch

from .errors import StoreError
from .names import fresh_name


class TensorStore(Mapping[str, torch.Tensor]):
    """A mapping from tensor id to tensor that only grows, except through ``retain``."""

    def __init__(self, tensors: Mapping[str, torch.Tensor] | None = None):
        self._tensors: dict[str, torch.Tensor] = {}
        for tid, t in (tensors or {}).items():
            self._tensors[tid] = t

    # ---- Mapping ---------------------------------------------------------------------------
    def __getitem__(self, tid: str) -> torch.Tensor:
        try:
            return self._tensors[tid]
        except KeyError:
            raise StoreError(f"tensor '{tid}' is not in the store") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._tensors)

    def __len__(self) -> int:
        return len(self._tensors)

    def __contains__(self, tid: object) -> bool:
        return tid in self._tensors

    def __repr__(self) -> str:
        return f"TensorStore({len(self)} tensors, {self.nbytes() / 2**20:.2f} MiB)"

    # ---- growth ----------------------------------------------------------------------------
    def add(self, tid: str, tensor: torch.Tensor, *, buffer: bool = False) -> torch.Tensor:
        """Add a new tensor; a parameter is wrapped in ``nn.Parameter`` unless already one.

        Raises:
            StoreError: if ``tid`` is taken (existing tensors are never replaced).
        """
        if tid in self._tensors:
            raise StoreError(f"tensor '{tid}' already exists; stored tensors are never replaced")
        if buffer or not tensor.is_floating_point():
            value = tensor.detach()
        elif isinstance(tensor, torch.nn.Parameter):
            value = tensor
        else:
            value = torch.nn.Parameter(tensor.detach(), requires_grad=True)
        self._tensors[tid] = value
        return value

    def is_parameter(self, tid: str) -> bool:
        t = self[tid]
        # The exact types first: Parameter's isinstance check runs Python code, and a search
        # asks this of every tensor at every checkpoint.
        if type(t) is torch.nn.Parameter:
            return True
        return type(t) is not torch.Tensor and isinstance(t, torch.nn.Parameter)

    def fresh_id(self, base: str) -> str:
        """``base`` if unused, else ``base~1``, ``base~2``… (ids are never reused)."""
        return fresh_name(base, self._tensors, sep="~")

    def update(self, other: Mapping[str, torch.Tensor]) -> None:
        """Add every tensor of ``other`` whose id is new; an id present in both must be the
        same object (that is how shared parameters merge)."""
        for tid, t in other.items():
            mine = self._tensors.get(tid)
            if mine is None:
                self._tensors[tid] = t
            elif mine is not t:
                raise StoreError(f"tensor '{tid}' differs between the two stores")

    # ---- views and freeing -----------------------------------------------------------------
    def view(self, ids: Iterable[str]) -> TensorStore:
        """A store holding the same tensor objects for ``ids`` only (nothing is copied)."""
        return TensorStore({tid: self[tid] for tid in ids})

    def retain(self, ids: Iterable[str]) -> list[str]:
        """Drop every tensor not in ``ids`` (no graph refers to it any more); returns the
        dropped ids. Memory is released once no module holds the tensor either."""
        keep = set(ids)
        dropped = [tid for tid in self._tensors if tid not in keep]
        for tid in dropped:
            del self._tensors[tid]
        return dropped

    def nbytes(self, ids: Iterable[str] | None = None) -> int:
        """Bytes held by ``ids`` (default: all), counting each storage once."""
        seen: set[int] = set()
        total = 0
        for tid in self._tensors if ids is None else ids:
            t = self[tid]
            key = t.untyped_storage().data_ptr()
            if key in seen and key != 0:
                continue
            seen.add(key)
            total += t.untyped_storage().nbytes()
        return total

    def numel(self, ids: Iterable[str] | None = None, *, parameters_only: bool = True) -> int:
        ids = list(self._tensors if ids is None else ids)
        return sum(self[t].numel() for t in ids if not parameters_only or self.is_parameter(t))

    def to(self, device: str | torch.device | None = None, dtype: torch.dtype | None = None):
        """A new store of converted copies (floating tensors only change dtype). Not shared."""
        out = TensorStore()
        for tid, t in self._tensors.items():
            new_dtype = dtype if (dtype is not None and t.is_floating_point()) else t.dtype
            copy = t.detach().to(device=device, dtype=new_dtype, copy=True)
            out.add(tid, copy, buffer=not isinstance(t, torch.nn.Parameter))
        return out

    def clone(self) -> TensorStore:
        """A deep copy: same ids, new tensors (e.g. to train a baseline independently)."""
        return self.to()

    def snapshot(self, ids: Iterable[str] | None = None) -> dict[str, torch.Tensor]:
        """Detached copies of the tensors, e.g. to check later that a pass changed none."""
        return {tid: self[tid].detach().clone() for tid in (self._tensors if ids is None else ids)}
