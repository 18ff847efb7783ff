"""Make mmengine checkpoints loadable under torch's ``weights_only`` default.

The problem
-----------
Since torch 2.6, :func:`torch.load` defaults to ``weights_only=True``: it
unpickles with a restricted unpickler that only builds tensors, containers
and an allow-list of globals. mmengine 0.10.7 calls ``torch.load(filename,
map_location=...)`` without passing ``weights_only`` (in
``mmengine.runner.checkpoint.CheckpointLoader``), but the checkpoints its
``Runner`` writes hold more than tensors: the ``message_hub`` state keeps
:class:`~mmengine.logging.HistoryBuffer` objects (numpy arrays inside, plus
references to the buffer's statistics *methods*) and numpy scalars in its
runtime info (e.g. ``eta``). Out of the box every ``resume=True`` (and every
``load_from`` of a Runner-written checkpoint) therefore fails with
``pickle.UnpicklingError``.

The policy
----------
We never pass ``weights_only=False`` and never patch :func:`torch.load`: that
would execute arbitrary pickles. Instead :func:`allow_mmengine_checkpoints`
adds to torch's allow-list (:func:`torch.serialization.add_safe_globals`)
exactly the globals that mmengine's Runner checkpoints reference, found
empirically by saving/resuming a real Runner and reading which globals the
pickle names (see :func:`mmengine_safe_globals` for the list and the reason
for each one). Everything else -- ``os.system`` in a ``__reduce__``, an
arbitrary user class, the real ``builtins.getattr`` -- is still refused with
``pickle.UnpicklingError``.

The one non-obvious entry is ``builtins.getattr``: pickle protocol 2 (torch's
default) stores a function whose ``__qualname__`` is dotted, such as
``HistoryBuffer.mean``, as ``getattr(HistoryBuffer, 'mean')``. Allowing the
real ``getattr`` would let a checkpoint read any attribute of any allowed
object (and ``HistoryBuffer.__setstate__`` copies what it gets into the
*class-level* table of statistics methods that mmengine later calls). So the
name ``builtins.getattr`` is mapped to :func:`_history_buffer_getattr`, which
only resolves ``HistoryBuffer.{min,max,current,mean}`` and refuses anything
else.

This module depends only on torch, numpy and mmengine, not on the rest of
kdtoolbox, and :func:`allow_mmengine_checkpoints` is idempotent (torch keeps
its allow-list in a set and every call adds the very same objects).
"""
import pickle
from typing import Any, Callable, List, Tuple, Union

import torch

__all__ = ['allow_mmengine_checkpoints', 'mmengine_safe_globals']

SafeGlobal = Union[Callable, Tuple[Callable, str]]

# The statistics methods that ``HistoryBuffer._set_default_statistics``
# registers; they are what ``HistoryBuffer.__getstate__`` pickles by reference.
_HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')

# numpy dtype characters whose concrete ``numpy.dtypes.*DType`` classes are
# allowed: bool, signed/unsigned integers of every C width (so both the
# ``Long`` and ``LongLong`` spellings of 64 bit are covered) and IEEE floats.
# Not allowed: object ('O'), strings/bytes/void, datetimes, complex and
# long double -- mmengine never stores them in a checkpoint.
_NUMPY_DTYPE_CHARS = '?bBhHiIlLqQefd'


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """Stand-in for ``builtins.getattr`` inside the weights-only unpickler.

    Resolves only ``getattr(HistoryBuffer, m)`` for the four default
    statistics methods; anything else raises ``pickle.UnpicklingError``.
    """
    from mmengine.logging.history_buffer import HistoryBuffer

    if obj is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'getattr({obj!r}, {name!r}) is not allowed in a weights-only load: '
        'kdtoolbox only resolves mmengine HistoryBuffer statistics methods '
        f'{_HISTORY_BUFFER_METHODS}.')


def mmengine_safe_globals() -> List[SafeGlobal]:
    """Return the globals an mmengine 0.10.7 Runner checkpoint needs.

    Entries are either the object itself (torch keys it by
    ``__module__.__qualname__``) or a ``(object, 'pickled.name')`` pair when
    the name written in the pickle differs from that. Torch already allows,
    by default, everything else a Runner checkpoint names:
    ``collections.OrderedDict`` (state dicts, message hub),
    ``collections.Counter`` (``MultiStepLR.milestones``), ``_codecs.encode``
    (bytes under protocol 2), ``torch._utils._rebuild_tensor_v2`` and the
    storage classes.

    Allowed here:

    * ``mmengine.logging.history_buffer.HistoryBuffer``: the values of
      ``message_hub['log_scalars']`` (loss, lr, time, data_time, ...).
      Built with ``__new__`` + ``__setstate__``; the state is a plain dict of
      ints and numpy arrays.
    * ``builtins.getattr`` -> :func:`_history_buffer_getattr` (NOT the real
      ``getattr``): each HistoryBuffer pickles its ``statistics_methods``
      table, i.e. ``getattr(HistoryBuffer, 'min'|'max'|'current'|'mean')``.
    * ``numpy.core.multiarray._reconstruct`` and ``numpy.ndarray``: rebuild
      the ``_log_history`` / ``_count_history`` arrays of a HistoryBuffer
      (``_reconstruct(ndarray, shape, dtype)`` then ``ndarray.__setstate__``).
    * ``numpy.core.multiarray.scalar``: numpy scalars in the message hub's
      runtime info. Seen empirically: ``eta`` is a ``numpy.float64``;
      ``CheckpointHook(save_best=...)`` stores ``best_score`` as the metric
      returned it (``numpy.float32`` from a numpy-based metric); metrics that
      are not scalars to log (e.g. a ``numpy.bool_``) land in runtime info
      as ``val/<name>``.
    * ``numpy.dtype``: every array and scalar above pickles its dtype as
      ``numpy.dtype('f8', False, True)`` + ``__setstate__``.
    * the concrete dtype classes ``numpy.dtypes.{Bool,Int8..64,UInt8..64,
      Float16,Float32,Float64}DType`` (incl. the C-width aliases such as
      ``LongLongDType``; int64 is ``Int64DType`` on Linux): numpy 1.26
      builds ``numpy.dtype(...)`` as an instance of these subclasses, and
      torch only runs ``__setstate__`` (the BUILD opcode) on instances of
      allowed types. Only ``Float64DType`` and ``Int64DType`` (HistoryBuffer
      arrays, ``eta``) are needed by a default Runner; bool/float32 were seen
      with a numpy metric, the other widths are there for the same reason.
      They never appear by name in the pickle, so a checkpoint cannot call
      them.
    * ``numpy._core.multiarray.{_reconstruct,scalar}``: the same two
      functions under the module path numpy >= 2 writes, so checkpoints saved
      in a numpy-2 environment load too (same objects, no extra surface).

    Not covered on purpose: statistics functions registered with
    ``HistoryBuffer.register_statistics`` (the table is class-level, so they
    are pickled into every checkpoint); whoever registers one must allow-list
    that function too, or checkpoints will not load.
    """
    import numpy as np
    from mmengine.logging.history_buffer import HistoryBuffer
    from numpy.core import multiarray

    dtype_classes = []
    for char in _NUMPY_DTYPE_CHARS:
        cls = type(np.dtype(char))
        if cls not in dtype_classes:
            dtype_classes.append(cls)

    safe: List[SafeGlobal] = [
        HistoryBuffer,
        (_history_buffer_getattr, 'builtins.getattr'),
        (multiarray._reconstruct, 'numpy.core.multiarray._reconstruct'),
        (multiarray._reconstruct, 'numpy._core.multiarray._reconstruct'),
        (multiarray.scalar, 'numpy.core.multiarray.scalar'),
        (multiarray.scalar, 'numpy._core.multiarray.scalar'),
        (np.ndarray, 'numpy.ndarray'),
        (np.dtype, 'numpy.dtype'),
    ]
    safe.extend(dtype_classes)
    return safe


def allow_mmengine_checkpoints() -> List[SafeGlobal]:
    """Allow-list mmengine Runner checkpoint globals for ``torch.load``.

    After this call, ``torch.load(path)`` with torch's default
    ``weights_only=True`` (which is what mmengine's resume / ``load_from``
    does) loads checkpoints written by an mmengine 0.10.7 Runner, while any
    other global is still refused. Safe to call any number of times.

    Returns:
        list: the entries passed to
        :func:`torch.serialization.add_safe_globals` (see
        :func:`mmengine_safe_globals`).
    """
    safe = mmengine_safe_globals()
    already = set(torch.serialization.get_safe_globals())
    missing = [g for g in safe if g not in already]
    if missing:
        torch.serialization.add_safe_globals(missing)
    return safe
