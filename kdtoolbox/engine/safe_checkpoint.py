"""Checkpoints that survive a process killed while saving.

mmengine 0.10.7 writes a checkpoint straight into its final file (a kill mid-write leaves a
truncated ``epoch_N.pth`` that ``last_checkpoint`` may already name), and with ``max_keep_ckpts``
its ``CheckpointHook`` deletes the oldest checkpoint *before* writing the new one (a kill then
leaves no usable checkpoint at all). Here:

- :class:`AtomicLocalBackend` (mmengine file backend ``'kdtoolbox_atomic_local'``) writes to a
  temporary file in the same directory, fsyncs it, then ``os.replace``-s it onto the final name
  (atomic on POSIX and Windows): the final path holds either the old or the new complete file;
- :class:`SafeCheckpointHook` saves through that backend, then points ``last_checkpoint`` at the new
  file (also atomically), and only then removes checkpoints beyond ``max_keep_ckpts``.

``tools/train.py`` swaps mmengine's ``CheckpointHook`` for :class:`SafeCheckpointHook` in every
config (same arguments), so a killed run resumes from its last complete checkpoint.
"""
from __future__ import annotations

import os
import os.path as osp
import tempfile
from typing import Union

from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import CheckpointHook

from ..registry import HOOKS

ATOMIC_BACKEND = 'kdtoolbox_atomic_local'


def atomic_write(data: Union[bytes, str], filepath: str) -> None:
    """Write ``data`` to ``filepath`` so that readers see the old or the new content, never a part."""
    directory = osp.dirname(osp.abspath(filepath))
    os.makedirs(directory, exist_ok=True)
    mode = 'wb' if isinstance(data, bytes) else 'w'
    fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(filepath)}.', suffix='.tmp', dir=directory)
    try:
        with os.fdopen(fd, mode) as f:
            # in 16 MiB pieces: a kill lands mid-file rather than inside one huge write call
            step = 1 << 24
            for start in range(0, len(data), step):
                f.write(data[start:start + step])
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, filepath)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


@register_backend(ATOMIC_BACKEND)
class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose ``put`` / ``put_text`` are atomic (temp file + rename)."""

    def put(self, obj: bytes, filepath) -> None:
        atomic_write(obj, str(filepath))

    def put_text(self, obj: str, filepath, encoding: str = 'utf-8') -> None:
        atomic_write(obj.encode(encoding), str(filepath))


@HOOKS.register_module()
class SafeCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` with atomic writes and delete-after-save (see the module doc).

    Takes the same arguments. Local output directories use :class:`AtomicLocalBackend` unless
    ``backend_args`` names another backend.
    """

    def __init__(self, *args, backend_args=None, **kwargs):
        out_dir = kwargs.get('out_dir')
        if backend_args is None and (out_dir is None or '://' not in str(out_dir)):
            backend_args = dict(backend=ATOMIC_BACKEND)
        super().__init__(*args, backend_args=backend_args, **kwargs)

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if not is_main_process() or '://' in str(self.out_dir):
            return
        # temporary files of a save that was killed: never a valid checkpoint, safe to drop
        import glob
        for tmp in glob.glob(osp.join(self.out_dir, '.*.tmp')):
            os.remove(tmp)
            runner.logger.warning(f'removed {tmp}, the remains of a checkpoint save that was interrupted')

    def _save_checkpoint_with_step(self, runner, step, meta):
        ckpt_filename = self.filename_tmpl.format(step)
        self.last_ckpt = self.file_backend.join_path(self.out_dir, ckpt_filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        outdated = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        runner.save_checkpoint(self.out_dir, ckpt_filename, self.file_client_args,
                               save_optimizer=self.save_optimizer,
                               save_param_scheduler=self.save_param_scheduler, meta=meta,
                               by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        atomic_write(self.last_ckpt, osp.join(runner.work_dir, 'last_checkpoint'))
        for old in outdated:  # only now that the new checkpoint is complete
            path = self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(old))
            if self.file_backend.isfile(path):
                self.file_backend.remove(path)
            elif self.file_backend.isdir(path):
                self.file_backend.rmtree(path)


def make_resumable(cfg) -> None:
    """Swap mmengine's ``CheckpointHook`` in ``cfg.default_hooks`` for :class:`SafeCheckpointHook`
    and add :class:`kdtoolbox.engine.hooks.RandomStateHook` (exact resume) unless present."""
    hooks = cfg.get('default_hooks') or {}
    ckpt = hooks.get('checkpoint')
    if ckpt is not None and ckpt.get('type') in ('CheckpointHook', 'mmengine.CheckpointHook', CheckpointHook):
        ckpt['type'] = 'kdtoolbox.SafeCheckpointHook'
    custom = list(cfg.get('custom_hooks') or [])
    if not any(str(h.get('type', '')).split('.')[-1] == 'RandomStateHook' for h in custom):
        custom.append(dict(type='kdtoolbox.RandomStateHook'))
    cfg.custom_hooks = custom
