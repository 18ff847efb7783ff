"""The method-agnostic engine: recorders, teacher, distillers, DistillationModel, hooks."""
from .context import DistillContext
from .distributed import DeviceAwareDistributedDataParallel
from .distiller import BaseDistiller, ConfigurableDistiller, FeaturePair
from .hooks import DistillLossScheduleHook, RandomStateHook, distill_scale
from .model import DistillationModel
from .preflight import PreflightError, PreflightHook
from .safe_checkpoint import SafeCheckpointHook, make_resumable
from .recorder import Recorder, RecordError, Records, RecordSpec

__all__ = ['DeviceAwareDistributedDataParallel', 'DistillContext', 'BaseDistiller', 'ConfigurableDistiller', 'FeaturePair',
           'PreflightError', 'PreflightHook', 'DistillLossScheduleHook', 'RandomStateHook',
           'distill_scale', 'DistillationModel', 'Recorder', 'RecordError', 'Records', 'RecordSpec',
           'SafeCheckpointHook', 'make_resumable']
