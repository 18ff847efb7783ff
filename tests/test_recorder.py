"""Recorders: every call kept in order, inputs or outputs, clear errors for wrong names."""
import pytest
import torch
import torch.nn as nn

from kdtoolbox.engine.recorder import Recorder, RecordError


class Shared(nn.Module):
    """``head`` is applied to three inputs, like a detection head shared across FPN levels."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Linear(4, 4)
        self.head = nn.Linear(4, 2)
        self.unused = nn.Linear(4, 4)

    def forward(self, x):
        x = self.stem(x)
        return [self.head(x * k) for k in (1.0, 2.0, 3.0)]


def test_records_every_call_in_order():
    model = Shared()
    rec = Recorder(model, {'head': 'head', 'stem_in': dict(module='stem', io='input')}, 'student')
    x = torch.randn(5, 4)
    with rec:
        outs = model(x)
    records = rec.records()
    calls = records.calls('head')
    assert len(calls) == 3
    for got, want in zip(calls, outs):
        assert torch.equal(got, want)
    assert torch.equal(records['head'], outs[0])
    assert torch.equal(records.get_call('head', 2), outs[2])
    assert torch.equal(records['stem_in'], x)


def test_nothing_recorded_outside_the_context_and_reset_on_enter():
    model = Shared()
    rec = Recorder(model, {'head': 'head'})
    model(torch.randn(1, 4))  # not recording
    with rec:
        model(torch.randn(1, 4))
    assert len(rec.records().calls('head')) == 3
    with rec:
        pass
    with pytest.raises(RecordError, match="did not run"):
        rec.records()['head']


def test_unknown_module_is_named_with_close_matches():
    with pytest.raises(RecordError, match=r"teacher has no module 'haed'.*'head'"):
        Recorder(Shared(), {'h': 'haed'}, 'teacher')


def test_module_that_never_ran_is_an_error_naming_it():
    model = Shared()
    rec = Recorder(model, {'u': 'unused'}, 'student')
    with rec:
        model(torch.randn(1, 4))
    with pytest.raises(RecordError, match=r"student recorder 'u': module 'unused' did not run"):
        rec.records()['u']


def test_call_index_out_of_range_and_unknown_record():
    model = Shared()
    rec = Recorder(model, {'head': 'head'})
    with rec:
        model(torch.randn(1, 4))
    with pytest.raises(RecordError, match='ran 3 time'):
        rec.records().get_call('head', 3)
    with pytest.raises(RecordError, match="no recorder named 'nope'"):
        rec.records()['nope']


def test_bad_spec_is_rejected_with_its_name():
    with pytest.raises(KeyError, match='s.x'):
        Recorder(Shared(), {'x': dict(modul='head')}, 's')
    with pytest.raises(ValueError, match="io must be"):
        Recorder(Shared(), {'x': dict(module='head', io='grad')}, 's')
