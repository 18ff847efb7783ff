"""The method-agnostic engine: recorders, teacher, distillers, DistillationModel, hooks."""
from .context import DistillContext
from .distributed import DeviceAwareDistributedDataParallel
from .distiller import BaseDistiller, ConfigurableDistiller
from .hooks import DistillLossScheduleHook, RandomStateHook, distill_scale
from .model import DistillationModel
from .safe_checkpoint import SafeCheckpointHook, make_resumable
from .recorder import Recorder, RecordError, Records, RecordSpec

__all__ = ['DeviceAwareDistributedDataParallel', 'DistillContext', 'BaseDistiller', 'ConfigurableDistiller', 'DistillLossScheduleHook', 'RandomStateHook',
           'distill_scale', 'DistillationModel', 'Recorder', 'RecordError', 'Records', 'RecordSpec',
           'SafeCheckpointHook', 'make_resumable']
