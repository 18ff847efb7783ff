"""The one place that imports spconv, and makes the installed build usable on this machine.

``import_spconv()`` returns the ``spconv.pytorch`` module. Nothing in ``kdtoolbox`` imports spconv at
import time: the detection plugin and every 2D test must keep working without it.

What it fixes or checks (spconv 2.3.x, see ``../shared/STACK.md`` and CUSTOM_OPS.md):

- **CPU backward.** ``spconv.pytorch.ops.indice_conv_backward`` (the backward of every SubMConv3d and
  SparseConv3d on CPU) calls ``get_current_stream()`` (``torch.cuda.current_stream()``) before it looks
  at the tensor's device; on a CPU-only torch that raises "Torch not compiled with CUDA enabled". The
  forward paths and ``spconv.pytorch.hash`` / ``spconv.pytorch.utils`` guard the call with
  ``if features.is_cuda`` / ``if not self.is_cpu``; only ``spconv.pytorch.ops`` does not. When CUDA is
  unavailable, its module-level ``get_current_stream`` is replaced (once) by one that returns the null
  stream 0, which the CPU kernels ignore. With CUDA available nothing is patched: the original call
  succeeds, and a CPU tensor's kernel ignores the stream.
- **Wrong build.** The CPU wheel (``pip install spconv``) cannot run CUDA tensors ("... not implemented
  for CPU ONLY build"); a CUDA wheel (``spconv-cu1xx``) may fail to load without the CUDA libraries.
  Both, and a missing spconv, are an ``ImportError`` that names the package to install.
- **Eval-mode bias** (spconv issue 719): the CPU kernel asserts "cpu don't support act and bias" for a
  k x k x k conv with a bias in eval mode. Not patchable safely (patching it away silently drops the
  bias); kdtoolbox's sparse adapters are bias-free instead (``kdtoolbox/adapters/sparse.py``).
"""
from __future__ import annotations

import importlib
from importlib import metadata
from typing import Optional, Union

import torch

# Modules whose ``get_current_stream`` is called on a CPU path without a device check (spconv 2.3.8).
PATCHED_MODULES = ('spconv.pytorch.ops',)
_PATCH_FLAG = '_kdtoolbox_cpu_stream_patch'


def installed_spconv_packages() -> list:
    """Names and versions of the installed spconv distributions, e.g. ``['spconv 2.3.8']``."""
    found = []
    for dist in metadata.distributions():
        name = (dist.metadata.get('Name') or '').lower()
        if name == 'spconv' or name.startswith('spconv-cu'):
            found.append(f'{name} {dist.version}')
    return sorted(set(found))


def spconv_package_for(device: Union[str, torch.device]) -> str:
    """The pip package of spconv 2.x that matches ``device`` and this torch build.

    ``'spconv'`` (the CPU-only wheel) for CPU; ``'spconv-cu<major><minor>'`` from ``torch.version.cuda``
    for CUDA (e.g. ``spconv-cu121``; spconv publishes wheels for a subset of CUDA versions: take the
    nearest older one if that exact name does not exist).
    """
    if torch.device(device).type != 'cuda':
        return 'spconv'
    cuda = torch.version.cuda
    if not cuda:
        return 'spconv-cu<XY> (and a CUDA build of torch)'
    return 'spconv-cu' + ''.join(cuda.split('.')[:2])


def _cpu_safe_get_current_stream(original):
    def get_current_stream():
        # The null stream for CPU-only torch (the CPU kernels ignore it); the real one otherwise.
        if not torch.cuda.is_available():
            return 0
        return original()

    setattr(get_current_stream, _PATCH_FLAG, True)
    get_current_stream.__wrapped__ = original
    return get_current_stream


def is_cpu_backward_patched() -> bool:
    """Whether every module in :data:`PATCHED_MODULES` has the CPU-safe ``get_current_stream``."""
    for name in PATCHED_MODULES:
        module = importlib.import_module(name)
        if not getattr(module.get_current_stream, _PATCH_FLAG, False):
            return False
    return True


def patch_cpu_backward(force: bool = False) -> bool:
    """Replace ``get_current_stream`` in :data:`PATCHED_MODULES` (idempotent).

    Patches only when CUDA is unavailable (or ``force``). Returns whether the patch is in place.
    """
    if torch.cuda.is_available() and not force:
        return False
    for name in PATCHED_MODULES:
        module = importlib.import_module(name)
        current = module.get_current_stream
        if not getattr(current, _PATCH_FLAG, False):
            module.get_current_stream = _cpu_safe_get_current_stream(current)
    return True


def _missing_message(device: torch.device, cause: Optional[BaseException]) -> str:
    installed = installed_spconv_packages()
    msg = (f'spconv 2.x is needed for sparse 3D ops on {device.type} but could not be imported'
           f'{": " + repr(cause) if cause is not None else ""}. Installed: {installed or "none"}. '
           f'Install `pip install {spconv_package_for(device)}`')
    if installed:
        msg += f' (uninstall the others first: pip uninstall {" ".join(p.split()[0] for p in installed)})'
    return msg + '.'


def import_spconv(device: Optional[Union[str, torch.device]] = None):
    """Import and return ``spconv.pytorch``, checked against ``device`` and with the CPU fix applied.

    Args:
        device: the device the sparse tensors will live on; default ``'cuda'`` when CUDA is available,
            else ``'cpu'``.

    Raises:
        ImportError: spconv is missing, fails to load, or is the CPU-only build while ``device`` is
            CUDA; the message names the package to install (``spconv`` or ``spconv-cu<XY>``).
    """
    device = torch.device(device if device is not None else ('cuda' if torch.cuda.is_available() else 'cpu'))
    try:
        spconv_pytorch = importlib.import_module('spconv.pytorch')
        cppconstants = importlib.import_module('spconv.cppconstants')
    except (ImportError, OSError, RuntimeError) as exc:  # OSError/RuntimeError: CUDA libraries missing
        raise ImportError(_missing_message(device, exc)) from exc
    if device.type == 'cuda' and getattr(cppconstants, 'CPU_ONLY_BUILD', False):
        raise ImportError(
            f'the installed spconv ({", ".join(installed_spconv_packages()) or "unknown"}) is the CPU-only '
            f'build and cannot run CUDA tensors ("not implemented for CPU ONLY build"). Install '
            f'`pip uninstall spconv && pip install {spconv_package_for(device)}`.')
    patch_cpu_backward()
    return spconv_pytorch


def is_sparse_conv_tensor(obj) -> bool:
    """Whether ``obj`` is a spconv ``SparseConvTensor``, without importing spconv."""
    cls = type(obj)
    return cls.__name__ == 'SparseConvTensor' and cls.__module__.startswith('spconv.')
