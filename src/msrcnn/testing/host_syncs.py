"""Counting the operations that make the host wait for a GPU, on any device (a CPU included).

On a GPU, PyTorch queues kernels and the Python code runs ahead of them, until an operation needs a
value the device has not produced yet: reading a tensor's value on the host (``item``, ``bool``,
``int``, ``tolist``), an operation whose *output shape* depends on the data (``nonzero``,
``unique``, boolean-mask indexing, ``masked_select``, ``repeat_interleave`` without ``output_size``),
or a blocking copy of Python data to the device (``torch.tensor(data, device=...)``).
Each one drains the queue and leaves the GPU idle until the host has queued the next kernels.

:func:`count_host_syncs` counts those operations with a ``TorchDispatchMode``, so a CPU run counts what
a GPU run would wait for (the same code path; only the device differs). On CUDA,
``torch.cuda.set_sync_debug_mode("warn")`` confirms it (``benchmarks/bench_gpu.py`` does both).

    >>> with count_host_syncs() as syncs:
    ...     model(images)
    >>> syncs.total, syncs.by_op          # e.g. 9, {'aten.nonzero.default': 4, 'torchvision.nms.default': 1, ...}
    >>> print(syncs.report())             # with the Python frame that called each one
"""

from __future__ import annotations

import traceback
import weakref
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["HostSyncs", "count_host_syncs"]

# Operations that read device data on the host or whose output shape depends on device data.
_ALWAYS = {
    "aten._local_scalar_dense.default",  # item(), bool(t), int(t), float(t)
    "aten.is_nonzero.default",
    "aten.equal.default",
    "aten.nonzero.default",
    "aten.nonzero_numpy.default",
    "aten.masked_select.default",
    "aten.bincount.default",  # its output size is the largest value + 1
    "aten._unique.default",
    "aten._unique2.default",
    "aten.unique_consecutive.default",
    "aten.unique_dim.default",
    "aten.unique_dim_consecutive.default",
    "torchvision.nms.default",  # its CUDA kernel copies the suppression mask to the host
}
_REPEAT_INTERLEAVE = "aten.repeat_interleave.Tensor"
_REPEAT_INTERLEAVE_SELF = "aten.repeat_interleave.self_Tensor"
_BOOL_INDEXING = {"aten.index.Tensor", "aten.index_put.default", "aten.index_put_.default"}

_THIS_FILE = Path(__file__).resolve()

# Factories whose result stays on the CPU on a GPU run when no device is given (torchvision's
# ``torch.empty(1).uniform_(...).item()`` for the random input size, scale tensors of Python floats):
# values derived only from such tensors are host data, and reading them makes nobody wait.
_COPIES = ("tensor", "as_tensor")
_HOST_FACTORIES = (
    "arange", "as_tensor", "empty", "eye", "full", "linspace", "ones", "rand", "randint", "randn",
    "randperm", "scalar_tensor", "tensor", "zeros",
)  # fmt: skip


class _TensorSet:
    """Tensors by identity, without keeping them alive (``weakref.WeakSet`` compares with ``==``)."""

    def __init__(self) -> None:
        self._refs: dict[int, weakref.ref] = {}

    def add(self, tensor: torch.Tensor) -> None:
        self._refs[id(tensor)] = weakref.ref(tensor)

    def update(self, tensors) -> None:
        for tensor in tensors:
            self.add(tensor)

    def __contains__(self, tensor: torch.Tensor) -> bool:
        ref = self._refs.get(id(tensor))
        return ref is not None and ref() is tensor


@dataclass
class HostSyncs:
    """What :func:`count_host_syncs` saw: ``total``, per operation (``by_op``) and per caller (``by_site``)."""

    by_op: Counter = field(default_factory=Counter)
    by_site: Counter = field(default_factory=Counter)

    @property
    def total(self) -> int:
        return sum(self.by_op.values())

    def report(self, top: int = 20) -> str:
        """The operations and the calling lines, most frequent first."""
        lines = [f"{self.total} host syncs"]
        lines += [f"  {n:5d}  {op}" for op, n in self.by_op.most_common()]
        lines += ["  by caller:"] + [f"  {n:5d}  {site}" for site, n in self.by_site.most_common(top)]
        return "\n".join(lines)


def _is_sync(name: str, args: tuple, kwargs: dict) -> bool:
    if name in _ALWAYS:
        return True
    if name == _REPEAT_INTERLEAVE:  # repeat_interleave(repeats, *, output_size=None)
        return kwargs.get("output_size") is None and (len(args) < 2 or args[1] is None)
    if name == _REPEAT_INTERLEAVE_SELF:  # repeat_interleave(self, repeats, dim=None, *, output_size=None)
        return kwargs.get("output_size") is None and (len(args) < 4 or args[3] is None)
    if name in _BOOL_INDEXING:  # x[mask] / x[mask] = v: a nonzero inside
        indices = args[1] if len(args) > 1 else kwargs.get("indices", ())
        return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or ())
    return False


def _caller() -> str:
    """The innermost frame outside torch and this file (the line of code that asked for the sync)."""
    for frame in reversed(traceback.extract_stack()):
        path = Path(frame.filename)
        if (
            path.resolve() == _THIS_FILE
            or "/torch/" in frame.filename
            and "/torchvision/" not in frame.filename
        ):
            continue
        return f"{path.parent.name}/{path.name}:{frame.lineno} {frame.name}"
    return "?"


class _SyncCounter(TorchDispatchMode):
    def __init__(self, result: HostSyncs, sites: bool, host: _TensorSet) -> None:
        super().__init__()
        self.result = result
        self.sites = sites
        self.host = host  # tensors that hold host data on a GPU run too

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        inputs = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        on_host = bool(inputs) and all(t in self.host for t in inputs)
        if not on_host and _is_sync(name, args, kwargs):
            self.result.by_op[name] += 1
            if self.sites:
                self.result.by_site[_caller()] += 1
        out = func(*args, **kwargs)
        if on_host:
            self.host.update(t for t in tree_leaves(out) if isinstance(t, torch.Tensor))
        return out


@contextmanager
def count_host_syncs(sites: bool = True) -> Iterator[HostSyncs]:
    """Counts, inside the block, the tensor operations that would make the host wait for a GPU.

    Host data is not counted: tensors made by a factory (``torch.tensor``, ``torch.empty``, ...) without
    a ``device`` argument, which stay on the CPU on a GPU run too, and everything computed from them
    alone. ``Tensor.tolist`` and ``Tensor.numpy`` do not pass through PyTorch's dispatcher on a CPU
    tensor; they are counted through a temporary wrapper. ``sites=False`` skips the (slow) caller lookup.
    """
    result = HostSyncs()
    host = _TensorSet()
    methods = {name: getattr(torch.Tensor, name) for name in ("tolist", "numpy")}
    factories = {name: getattr(torch, name) for name in _HOST_FACTORIES}

    def counted(name, original):
        def method(self, *args, **kwargs):
            if self not in host:
                result.by_op[f"Tensor.{name}"] += 1
                if sites:
                    result.by_site[_caller()] += 1
            return original(self, *args, **kwargs)

        return method

    def host_factory(name, original):
        def factory(*args, **kwargs):
            out = original(*args, **kwargs)
            if kwargs.get("device") is None:
                if isinstance(out, torch.Tensor):
                    host.add(out)
            elif name in _COPIES and args and not isinstance(args[0], torch.Tensor):
                # Python data copied to the device: a blocking host-to-device copy, which waits for
                # every kernel queued before it (cudaMemcpyAsync + cudaStreamSynchronize)
                result.by_op[f"torch.{name}(data, device=...)"] += 1
                if sites:
                    result.by_site[_caller()] += 1
            return out

        return factory

    for name, original in methods.items():
        setattr(torch.Tensor, name, counted(name, original))
    for name, original in factories.items():
        setattr(torch, name, host_factory(name, original))
    try:
        with _SyncCounter(result, sites, host):
            yield result
    finally:
        for name, original in methods.items():
            setattr(torch.Tensor, name, original)
        for name, original in factories.items():
            setattr(torch, name, original)
