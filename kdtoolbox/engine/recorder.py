"""Forward-hook recorders: capture the outputs (or inputs) of named submodules of a model.

A :class:`Recorder` registers one forward hook per source when it is built (so a wrong module
name fails at build time, naming the module and the closest existing names) and stores values only
while it is active (``with recorder:``). A module called several times in one forward (a head
shared across FPN levels, a reused activation) keeps every call, in call order.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional, Union

import torch.nn as nn


@dataclass(frozen=True)
class RecordSpec:
    """What to record: ``module`` (dotted path from the model root, '' for the model itself) and
    ``io``: 'output' (the module's return value) or 'input' (its positional inputs; a single
    input is unwrapped)."""
    module: str
    io: str = 'output'

    @classmethod
    def parse(cls, spec: Union[str, Mapping, 'RecordSpec'], key: str) -> 'RecordSpec':
        if isinstance(spec, RecordSpec):
            return spec
        if isinstance(spec, str):
            return cls(module=spec)
        if isinstance(spec, Mapping):
            unknown = set(spec) - {'module', 'io'}
            if unknown or 'module' not in spec:
                raise KeyError(f'recorder {key!r}: expected keys module (and io), got {sorted(spec)}')
            io = spec.get('io', 'output')
            if io not in ('output', 'input'):
                raise ValueError(f"recorder {key!r}: io must be 'output' or 'input', got {io!r}")
            return cls(module=spec['module'], io=io)
        raise TypeError(f'recorder {key!r}: expected a module path or a dict, got {type(spec).__name__}')


class RecordError(LookupError):
    """A record was asked for that does not exist or was never produced."""


class Records(Mapping):
    """Recorded values of one forward pass: ``records[name]`` is the first call's value,
    ``records.calls(name)`` the list of every call."""

    def __init__(self, owner: str, values: dict[str, list[Any]], specs: dict[str, RecordSpec],
                 transform: Optional[Callable[[Any], Any]] = None):
        self._owner = owner
        self._values = values
        self._specs = specs
        self._transform = transform

    def with_transform(self, transform: Callable[[Any], Any]) -> 'Records':
        """The same records, each value passed through ``transform`` when read (e.g. to fp32)."""
        return Records(self._owner, self._values, self._specs, transform)

    def _raw_calls(self, name: str) -> list[Any]:
        if name not in self._specs:
            raise RecordError(f'{self._owner} has no recorder named {name!r} '
                              f'(recorders: {", ".join(self._specs) or "none"})')
        values = self._values.get(name, [])
        if not values:
            spec = self._specs[name]
            raise RecordError(f'{self._owner} recorder {name!r}: module {spec.module!r} did not run '
                              f'in this forward pass, so nothing was recorded (a module whose parent calls its '
                              f'.forward() directly bypasses hooks: record one of its submodules)')
        return values

    def calls(self, name: str) -> list[Any]:
        values = self._raw_calls(name)
        return [self._transform(v) for v in values] if self._transform is not None else values

    def get_call(self, name: str, call: int = 0) -> Any:
        values = self._raw_calls(name)
        try:
            value = values[call]
        except IndexError:
            raise RecordError(f'{self._owner} recorder {name!r}: call {call} asked for, but module '
                              f'{self._specs[name].module!r} ran {len(values)} time(s)') from None
        return self._transform(value) if self._transform is not None else value

    def __getitem__(self, name: str) -> Any:
        return self.get_call(name, 0)

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)


def find_module(model: nn.Module, path: str, owner: str = 'model') -> nn.Module:
    """``model.get_submodule(path)`` with an error that names the path and close matches."""
    if path == '':
        return model
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        close = difflib.get_close_matches(path, names, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ''
        raise RecordError(f'{owner} has no module {path!r}.{hint}') from None


class Recorder:
    """Records named modules of ``model`` while active.

    Args:
        model: the model whose modules are hooked.
        sources: record name -> module path, or dict(module=..., io='output'|'input').
        owner: 'student' / 'teacher', used in error messages.
    """

    def __init__(self, model: nn.Module, sources: Mapping[str, Any], owner: str = 'model'):
        self.owner = owner
        self.specs = {name: RecordSpec.parse(spec, f'{owner}.{name}') for name, spec in sources.items()}
        self._values: dict[str, list[Any]] = {}
        self._active = False
        self._handles = []
        self.modules: dict[str, nn.Module] = {}
        for name, spec in self.specs.items():
            module = find_module(model, spec.module, owner)
            self.modules[name] = module
            self._handles.append(module.register_forward_hook(self._make_hook(name, spec.io)))

    def _make_hook(self, name: str, io: str):
        def hook(module, inputs, output):
            if not self._active:
                return
            value = output if io == 'output' else (inputs[0] if len(inputs) == 1 else inputs)
            self._values.setdefault(name, []).append(value)
        return hook

    def __enter__(self) -> 'Recorder':
        self._values = {}
        self._active = True
        return self

    def __exit__(self, *exc) -> None:
        self._active = False

    def records(self) -> Records:
        """The values recorded by the last ``with`` block."""
        return Records(self.owner, self._values, self.specs)

    def clear(self) -> None:
        """Drop the recorded values (their memory is freed once nothing else refers to them)."""
        self._values = {}

    def remove(self) -> None:
        """Detach every hook (the recorder is unusable afterwards)."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def module_paths(self) -> list[str]:
        return [spec.module for spec in self.specs.values()]


def common_top_level(paths: list[str]) -> Optional[list[str]]:
    """Names of the direct children of the root that contain each path; None if a path is the root."""
    tops = []
    for path in paths:
        if path == '':
            return None
        top = path.split('.')[0]
        if top not in tops:
            tops.append(top)
    return tops
