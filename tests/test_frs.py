"""FRS: the per-level losses against plain loops, the distiller's sum over levels and weights,
the zero-mask guard, gradients, the Faster R-CNN (RPN score, P2-P6) variant, the official RetinaNet
config and two iterations of the demo config (with the linear warm-up) through tools/train.py."""
import math
import re

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS

from conftest import ROOT, distill_model_cfg, faster_rcnn_cfg, make_det_batch, retinanet_cfg
from kdtoolbox.engine import DistillContext, Records
from kdtoolbox.engine.recorder import RecordSpec
from kdtoolbox_plugins.detection.frs import FRS, PRESETS, frs_cls_loss, frs_feature_loss, richness_mask


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


# --- references written plainly from the paper ------------------------------------------------
def loop_level(fs, ft, cs, ct):
    """(L_feat, L_cls) of one level by loops: fs/ft [N][C][H][W] features, cs/ct [N][K][H][W] logits."""
    n_n, c_n, h_n, w_n, k_n = len(ft), len(ft[0]), len(ft[0][0]), len(ft[0][0][0]), len(ct[0])
    mask = [[[max(sigmoid(ct[n][k][h][w]) for k in range(k_n)) for w in range(w_n)] for h in range(h_n)]
            for n in range(n_n)]
    msum = sum(mask[n][h][w] for n in range(n_n) for h in range(h_n) for w in range(w_n))
    feat = cls = 0.0
    for n in range(n_n):
        for h in range(h_n):
            for w in range(w_n):
                m = mask[n][h][w]
                feat += sum((ft[n][c][h][w] - fs[n][c][h][w]) ** 2 for c in range(c_n)) * m
                for k in range(k_n):
                    p, q = sigmoid(cs[n][k][h][w]), sigmoid(ct[n][k][h][w])
                    cls += -(q * math.log(p) + (1 - q) * math.log(1 - p)) * m
    return feat / msum, cls / msum


def rand(*shape, seed=0, scale=1.0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale


def make_records(owner, scores, feats):
    values = {'score': list(scores), **{f'feat{i}': [f] for i, f in enumerate(feats)}}
    specs = {name: RecordSpec(module=name) for name in values}
    return Records(owner, values, specs)


def identity_adapters(distiller):
    """Make every 3x3 adapter the identity, so the distiller's loss is the paper's formula on F_s."""
    with torch.no_grad():
        for a in distiller.adapters:
            a.conv.weight.zero_()
            a.conv.bias.zero_()
            for c in range(a.conv.weight.shape[0]):
                a.conv.weight[c, c, 1, 1] = 1.0


# --- the losses ---------------------------------------------------------------------------------
def test_level_losses_match_plain_loops():
    fs, ft = rand(2, 3, 3, 4, seed=1), rand(2, 3, 3, 4, seed=2)
    cs, ct = rand(2, 5, 3, 4, seed=3, scale=2), rand(2, 5, 3, 4, seed=4, scale=2)
    mask = richness_mask(ct)
    assert mask.shape == (2, 3, 4)
    feat, cls = loop_level(fs.tolist(), ft.tolist(), cs.tolist(), ct.tolist())
    assert frs_feature_loss(fs, ft, mask).item() == pytest.approx(feat, rel=1e-10)
    assert frs_cls_loss(cs, ct, mask).item() == pytest.approx(cls, rel=1e-10)


def test_hand_computed_single_cell():
    # one cell, one channel: teacher logit 0 -> M = 0.5; F_t - F_s = 2 -> L_feat = 4 * 0.5 / 0.5 = 4;
    # student logit 0 too -> BCE(0.5, 0.5) = log 2
    one = torch.zeros(1, 1, 1, 1)
    mask = richness_mask(one)
    assert mask.item() == 0.5
    assert frs_feature_loss(one, one + 2, mask).item() == pytest.approx(4.0)
    assert frs_cls_loss(one, one, mask).item() == pytest.approx(math.log(2))


def test_mask_weights_cells_by_the_teachers_most_confident_channel():
    # two cells: the teacher is sure of something at cell 0 (max over channels), of nothing at cell 1
    ct = torch.tensor([[[[20.0, -20.0]], [[-20.0, -20.0]]]])  # [1, 2 channels, 1, 2]
    mask = richness_mask(ct)
    assert mask[0, 0, 0] == pytest.approx(1.0) and mask[0, 0, 1] < 1e-8
    fs = torch.zeros(1, 1, 1, 2)
    ft = torch.tensor([[[[1.0, 100.0]]]])  # the big difference is where the teacher sees nothing
    m0, m1 = sigmoid(20.0), sigmoid(-20.0)
    expected = (1.0 * m0 + 100.0 ** 2 * m1) / (m0 + m1)  # ~1.00002: the far cell barely counts
    assert frs_feature_loss(fs, ft, mask).item() == pytest.approx(expected, rel=1e-6)
    assert abs(expected - 1.0) < 1e-4


def test_zero_mask_gives_zero_loss_and_finite_gradients():
    ct = torch.full((1, 2, 2, 2), -200.0)  # sigmoid underflows to exactly 0: sum M = 0
    assert richness_mask(ct).sum() == 0
    fs = torch.randn(1, 3, 2, 2, requires_grad=True)
    cs = torch.randn(1, 2, 2, 2, requires_grad=True)
    loss = frs_feature_loss(fs, torch.randn(1, 3, 2, 2), richness_mask(ct)) + frs_cls_loss(cs, ct, richness_mask(ct))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(fs.grad).all() and torch.isfinite(cs.grad).all()


def test_distiller_sums_levels_with_the_preset_weights():
    levels = 3
    d = FRS(preset='gfl', student_channels=2, teacher_channels=2,
            feature_modules=[f'f{i}' for i in range(levels)]).double()
    identity_adapters(d)
    sizes = [(4, 4), (2, 2), (1, 1)]
    fs = [rand(2, 2, *s, seed=10 + i) for i, s in enumerate(sizes)]
    ft = [rand(2, 2, *s, seed=20 + i) for i, s in enumerate(sizes)]
    cs = [rand(2, 3, *s, seed=30 + i) for i, s in enumerate(sizes)]
    ct = [rand(2, 3, *s, seed=40 + i) for i, s in enumerate(sizes)]
    # the score module may run more often than there are levels (only the first calls count)
    out = d(make_records('student', cs + [rand(2, 3, 1, 1)], fs), make_records('teacher', ct, ft), DistillContext())
    refs = [loop_level(a.tolist(), b.tolist(), c.tolist(), e.tolist()) for a, b, c, e in zip(fs, ft, cs, ct)]
    assert set(out) == {'frs.loss_feat', 'frs.loss_cls'}
    assert out['frs.loss_feat'].item() == pytest.approx(0.1 * sum(r[0] for r in refs), rel=1e-9)
    assert out['frs.loss_cls'].item() == pytest.approx(0.05 * sum(r[1] for r in refs), rel=1e-9)


def test_presets_overrides_and_errors():
    assert (PRESETS['retinanet']['feat_weight'], PRESETS['retinanet']['cls_weight']) == (0.005, 0.02)
    assert (PRESETS['gfl']['feat_weight'], PRESETS['gfl']['cls_weight']) == (0.1, 0.05)
    assert (PRESETS['fcos']['feat_weight'], PRESETS['fcos']['cls_weight']) == (0.01, 0.05)
    assert (PRESETS['faster_rcnn']['feat_weight'], PRESETS['faster_rcnn']['cls_weight']) == (0.002, 0.1)
    d = FRS()
    assert d.student_recorders['score'] == 'bbox_head.retina_cls' and d.teacher_recorders['feat4'] == \
        'neck.fpn_convs.4.conv'
    assert d.adapters[0].conv.kernel_size == (3, 3) and d.adapters[0].relu is None
    d = FRS(preset='faster_rcnn')
    assert d.student_recorders == {'score': 'rpn_head.rpn_cls', 'feats': 'neck'} and d.num_levels == 5
    d = FRS(preset='fcos', cls_weight=0.0)
    assert d.cls_weight == 0.0 and d.feat_weight == 0.01 and d.student_recorders['score'] == 'bbox_head.conv_cls'
    assert FRS(feat_weight=0).adapters is None
    with pytest.raises(KeyError, match='preset'):
        FRS(preset='yolo')
    with pytest.raises(ValueError, match='3 student channel counts'):
        FRS(student_channels=[256] * 3)
    with pytest.raises(ValueError, match='feat_weight'):
        FRS(feat_weight=-1.0)


def test_distiller_errors_name_the_module_and_level():
    d = FRS(student_channels=2, teacher_channels=2, feature_modules=['a', 'b'])
    f = [torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 1, 1)]
    c = [torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 1, 1)]
    with pytest.raises(ValueError, match=r"'bbox_head.retina_cls' ran 1 time"):
        d(make_records('student', c[:1], f), make_records('teacher', c, f), DistillContext())
    with pytest.raises(ValueError, match='level 1: student scores'):
        d(make_records('student', [c[0], torch.zeros(1, 4, 1, 1)], f), make_records('teacher', c, f),
          DistillContext())


# --- inside a DistillationModel -----------------------------------------------------------------
def test_gradients_reach_student_and_adapters_never_the_teacher():
    student = retinanet_cfg(18)
    student['neck']['out_channels'] = 32
    student['bbox_head'].update(in_channels=32, feat_channels=32)
    model = MODELS.build(distill_model_cfg(dict(type='FRS', student_channels=32, teacher_channels=64),
                                           student=student))
    model.init_weights()
    inputs, samples = make_det_batch(n=2, size=128)
    samples[1].gt_instances = samples[1].gt_instances[:0]  # no box needed: FRS uses no GT
    losses = model(inputs, samples, mode='loss')
    for key in ('distill.frs.loss_feat', 'distill.frs.loss_cls'):
        assert losses[key].dtype == torch.float32 and losses[key].dim() == 0 and losses[key] > 0
    (losses['distill.frs.loss_feat'] + losses['distill.frs.loss_cls']).backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert model.student.bbox_head.retina_cls.weight.grad.abs().sum() > 0
    for i in range(5):
        assert model.student.neck.fpn_convs[i].conv.weight.grad.abs().sum() > 0, i
        assert model.distiller.adapters[i].conv.weight.grad.abs().sum() > 0, i
    names = [n for n, _ in model.named_parameters()]
    assert any(n.startswith('distiller.adapters.4.') for n in names)
    assert not any(n.startswith('teacher.') for n in names)


def test_faster_rcnn_preset_uses_rpn_objectness_on_p2_to_p6():
    distiller = dict(type='FRS', preset='faster_rcnn', student_channels=32, teacher_channels=32)
    model = MODELS.build(dict(type='kdtoolbox.DistillationModel', student=faster_rcnn_cfg(18),
                              teacher=faster_rcnn_cfg(34), distiller=distiller))
    seen = {}
    real = model.distiller.forward

    def spy(student, teacher, context):
        seen['feats'] = [tuple(f.shape) for f in teacher['feats']]
        seen['scores'] = [tuple(s.shape) for s in teacher.calls('score')]
        return real(student, teacher, context)

    model.distiller.forward = spy
    inputs, samples = make_det_batch(n=1, size=128)
    losses = model(inputs, samples, mode='loss')
    assert seen['feats'] == [(1, 32, 32, 32), (1, 32, 16, 16), (1, 32, 8, 8), (1, 32, 4, 4), (1, 32, 2, 2)]
    assert seen['scores'] == [(1, 3, s, s) for s in (32, 16, 8, 4, 2)]  # 3 anchors' objectness
    assert torch.isfinite(losses['distill.frs.loss_feat']) and torch.isfinite(losses['distill.frs.loss_cls'])


def test_registered_through_the_plugin():
    from kdtoolbox.registry import DISTILLERS
    assert DISTILLERS.get('FRS') is FRS


# --- the configs ----------------------------------------------------------------------------------
@pytest.mark.slow
def test_frs_retinanet_config_builds_offline():
    from test_fgd import offline
    cfg = Config.fromfile(f'{ROOT}/configs/frs_retinanet.py')
    assert cfg.model.teacher == 'mmdet::retinanet/retinanet_r101_fpn_2x_coco.py'
    assert cfg.model.teacher_checkpoint.endswith('retinanet_r101_fpn_2x_coco_20200131-5560aee8.pth')
    assert (cfg.model.distiller.feat_weight, cfg.model.distiller.cls_weight) == (0.005, 0.02)
    assert cfg.custom_hooks == [dict(type='kdtoolbox.DistillLossScheduleHook', warmup_iters=500, warmup_mode='linear')]
    assert cfg.train_cfg.max_epochs == 24 and cfg.optim_wrapper.optimizer.lr == 0.01
    model = MODELS.build(offline('configs/frs_retinanet.py').model)  # recorders resolve on both models
    assert model.teacher.backbone.depth == 101 and model.student.backbone.depth == 50
    assert type(model.distiller).__name__ == 'FRS' and len(model.distiller.adapters) == 5


@pytest.mark.slow
def test_demo_config_trains_two_iterations_with_the_warmup(tmp_path):
    from test_train_e2e import data_options, run
    out = run(['tools/train.py', 'configs/demo/frs_retinanet_shapes.py', '--work-dir', str(tmp_path / 'work'),
               '--cfg-options', 'model.teacher_checkpoint=None', 'model.student.test_cfg.score_thr=0.0',
               'train_cfg.max_epochs=1', *data_options(tmp_path / 'shapes')])
    first = re.search(r'Epoch\(train\) \[1\]\[1/2\].*', out).group(0)
    second = re.search(r'Epoch\(train\) \[1\]\[2/2\].*', out).group(0)
    # iteration 0 of the ramp: scale 0 (no teacher pass); iteration 1: 1/50
    assert 'distill_scale: 0.0000' in first and 'distill.frs' not in first, first
    assert 'distill_scale: 0.0200' in second, second
    assert re.search(r'distill\.frs\.loss_feat: [0-9.]+', second) and re.search(r'distill\.frs\.loss_cls: [0-9.]+',
                                                                                second), second
    saved = torch.load(tmp_path / 'work' / 'epoch_1.pth', map_location='cpu')
    assert any(k.startswith('distiller.adapters.') for k in saved['state_dict'])
