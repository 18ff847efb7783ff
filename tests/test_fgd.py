"""FGD: the per-level loss against plain loops over boxes and elements, the official formulation,
the distiller inside a DistillationModel (masks once per batch, gradients, presets), the
inheriting strategy through init_cfg, the official configs, and training through tools/train.py."""
import copy
import math
import re

import pytest
import torch
import torch.nn as nn
from mmengine.config import Config
from mmengine.registry import MODELS

from conftest import ROOT, distill_model_cfg, make_det_batch, retinanet_cfg
from kdtoolbox_plugins.detection import fgd as fgd_module
from kdtoolbox_plugins.detection.fgd import FGD, PRESETS, FGDLoss, GlobalContextBlock, fgd_attention

WEIGHTS = dict(alpha_fgd=1e-3, beta_fgd=5e-4, gamma_fgd=5e-4, lambda_fgd=5e-6)


def fgd_cfg(**kwargs):
    cfg = dict(type='FGD', student_channels=64, teacher_channels=64, num_levels=5)
    cfg.update(kwargs)
    return cfg


# --- references written plainly from the paper ------------------------------------------------
def loop_masks(boxes, h, w, src_h, src_w):
    """FGD's masks for one image by loops over boxes and cells (float64)."""
    fg = [[0.0] * w for _ in range(h)]
    for x1, y1, x2, y2 in boxes:
        c0, c1 = math.floor(x1 / src_w * w), math.ceil(x2 / src_w * w)
        r0, r1 = math.floor(y1 / src_h * h), math.ceil(y2 / src_h * h)
        weight = 1.0 / ((r1 - r0 + 1) * (c1 - c0 + 1))
        for r in range(max(r0, 0), min(r1, h - 1) + 1):
            for c in range(max(c0, 0), min(c1, w - 1) + 1):
                fg[r][c] = max(fg[r][c], weight)
    n_bg = sum(1 for r in range(h) for c in range(w) if fg[r][c] == 0)
    bg = [[(1.0 / n_bg if fg[r][c] == 0 else 0.0) for c in range(w)] for r in range(h)]
    return fg, bg


def loop_attention(f, temp):
    """Spatial [h][w] and channel [c] attention of one image's feature f[c][h][w] (lists)."""
    c_n, h_n, w_n = len(f), len(f[0]), len(f[0][0])
    sp = [[sum(abs(f[c][h][w]) for c in range(c_n)) / c_n / temp for w in range(w_n)] for h in range(h_n)]
    z = sum(math.exp(v) for row in sp for v in row)
    spatial = [[h_n * w_n * math.exp(v) / z for v in row] for row in sp]
    ch = [sum(abs(f[c][h][w]) for h in range(h_n) for w in range(w_n)) / (h_n * w_n) / temp for c in range(c_n)]
    z = sum(math.exp(v) for v in ch)
    channel = [c_n * math.exp(v) / z for v in ch]
    return spatial, channel


def loop_gcblock(f, block):
    """R(F) = F + transform(context) for one image, with the block's weights, by loops."""
    c_n, h_n, w_n = len(f), len(f[0]), len(f[0][0])
    wm, bm = block.conv_mask.weight.detach().double().reshape(-1).tolist(), float(block.conv_mask.bias.detach())
    logits = [[sum(wm[c] * f[c][h][w] for c in range(c_n)) + bm for w in range(w_n)] for h in range(h_n)]
    z = sum(math.exp(v) for row in logits for v in row)
    context = [sum(math.exp(logits[h][w]) / z * f[c][h][w] for h in range(h_n) for w in range(w_n))
               for c in range(c_n)]
    conv1, norm, _, conv2 = block.channel_add
    w1, b1 = conv1.weight.double().reshape(c_n // 2, c_n).tolist(), conv1.bias.double().tolist()
    hid = [sum(w1[k][c] * context[c] for c in range(c_n)) + b1[k] for k in range(c_n // 2)]
    mean = sum(hid) / len(hid)
    var = sum((v - mean) ** 2 for v in hid) / len(hid)
    g, b = norm.weight.double().reshape(-1).tolist(), norm.bias.double().reshape(-1).tolist()
    hid = [max(0.0, (v - mean) / math.sqrt(var + norm.eps) * g[k] + b[k]) for k, v in enumerate(hid)]
    w2, b2 = conv2.weight.double().reshape(c_n, c_n // 2).tolist(), conv2.bias.double().tolist()
    add = [sum(w2[c][k] * hid[k] for k in range(c_n // 2)) + b2[c] for c in range(c_n)]
    return [[[f[c][h][w] + add[c] for w in range(w_n)] for h in range(h_n)] for c in range(c_n)]


def loop_fgd_loss(module, s, t, masks, temp):
    """The four weighted FGD terms by loops over images, channels and cells (float64)."""
    n_img = s.shape[0]
    if module.align is not None:
        wa, ba = module.align.weight.double()[:, :, 0, 0].tolist(), module.align.bias.double().tolist()
        s = torch.tensor([[[[sum(wa[o][i] * s[n, i, h, w].item() for i in range(s.shape[1])) + ba[o]
                             for w in range(s.shape[3])] for h in range(s.shape[2])]
                           for o in range(len(wa))] for n in range(n_img)], dtype=torch.float64)
    s, t = s.double().tolist(), t.double().tolist()
    fg_sum = bg_sum = at_sum = gl_sum = 0.0
    for n in range(n_img):
        fg, bg = masks[n]
        sp_t, ch_t = loop_attention(t[n], temp)
        sp_s, ch_s = loop_attention(s[n], temp)
        c_n, h_n, w_n = len(t[n]), len(t[n][0]), len(t[n][0][0])
        for c in range(c_n):
            for h in range(h_n):
                for w in range(w_n):
                    d2 = (s[n][c][h][w] - t[n][c][h][w]) ** 2
                    fg_sum += fg[h][w] * sp_t[h][w] * ch_t[c] * d2
                    bg_sum += bg[h][w] * sp_t[h][w] * ch_t[c] * d2
        at_sum += sum(abs(a - b) for a, b in zip(ch_s, ch_t))
        at_sum += sum(abs(sp_s[h][w] - sp_t[h][w]) for h in range(h_n) for w in range(w_n))
        rs, rt = loop_gcblock(s[n], module.global_s), loop_gcblock(t[n], module.global_t)
        gl_sum += sum((rs[c][h][w] - rt[c][h][w]) ** 2 for c in range(c_n) for h in range(h_n) for w in range(w_n))
    return dict(loss_fg=module.alpha_fgd * fg_sum / n_img, loss_bg=module.beta_fgd * bg_sum / n_img,
                loss_at=module.gamma_fgd * at_sum / n_img, loss_global=module.lambda_fgd * gl_sum / n_img)


def randomise_gcblocks(module, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for block in (module.global_s, module.global_t):
            for p in block.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)


# --- the per-level loss ------------------------------------------------------------------------
@pytest.mark.parametrize('student_channels', [4, 6])  # 6 -> 4: through the 1x1 align conv
def test_level_loss_matches_plain_loops(student_channels):
    torch.manual_seed(0)
    h, w, temp = 4, 5, 0.5
    module = FGDLoss(student_channels, 4, temp=temp, **WEIGHTS)
    assert (module.align is None) == (student_channels == 4)
    randomise_gcblocks(module)  # a non-trivial global term (at init it is the plain MSE)
    s = torch.randn(2, student_channels, h, w)
    t = torch.randn(2, 4, h, w)
    # a 32x40 px image on a 4x5 grid (8 px cells): image 0 has two overlapping boxes, one partly
    # outside; image 1 has none
    boxes = [[(4., 4., 20., 12.), (12., 8., 44., 30.)], []]
    masks = [loop_masks(b, h, w, 32, 40) for b in boxes]
    fg = torch.tensor([m[0] for m in masks], dtype=torch.float32)
    bg = torch.tensor([m[1] for m in masks], dtype=torch.float32)
    out = module(s, t, fg, bg)
    ref = loop_fgd_loss(module, s, t, masks, temp)
    assert set(out) == set(ref)
    for key in ref:
        assert out[key].dtype == torch.float32
        assert math.isclose(out[key].item(), ref[key], rel_tol=2e-5), (key, out[key].item(), ref[key])
    # the masks fed to the module are exactly the ops' masks
    from kdtoolbox.ops.box_mask import fgd_masks
    ops_fg, ops_bg = fgd_masks([torch.tensor(b).reshape(-1, 4) for b in boxes], [(h, w)],
                               batch_input_shape=(32, 40))
    assert torch.allclose(ops_fg[0], fg) and torch.allclose(ops_bg[0], bg)


def test_focal_terms_equal_the_official_sqrt_weighted_formulation():
    torch.manual_seed(1)
    module = FGDLoss(8, 8, temp=0.5, **WEIGHTS)
    s, t = torch.randn(2, 8, 6, 7), torch.randn(2, 8, 6, 7)
    fg = torch.rand(2, 6, 7) * (torch.rand(2, 6, 7) > 0.5)
    bg = (fg == 0).float() / (fg == 0).float().sum(dim=(1, 2), keepdim=True)
    out = module(s, t, fg, bg)
    # official: MSELoss(sum) of features multiplied by sqrt(A_s(T)) sqrt(A_c(T)) sqrt(M), over N
    sp_t, ch_t = fgd_attention(t, 0.5)
    weight = torch.sqrt(sp_t)[:, None] * torch.sqrt(ch_t)[:, :, None, None]
    mse = nn.MSELoss(reduction='sum')
    fg_ref = mse(s * weight * torch.sqrt(fg)[:, None], t * weight * torch.sqrt(fg)[:, None]) / 2
    bg_ref = mse(s * weight * torch.sqrt(bg)[:, None], t * weight * torch.sqrt(bg)[:, None]) / 2
    assert torch.allclose(out['loss_fg'], 1e-3 * fg_ref, rtol=1e-5)
    assert torch.allclose(out['loss_bg'], 5e-4 * bg_ref, rtol=1e-5)
    sp_s, ch_s = fgd_attention(s, 0.5)
    at_ref = (ch_s - ch_t).abs().sum() / 2 + (sp_s - sp_t).abs().sum() / 2
    assert torch.allclose(out['loss_at'], 5e-4 * at_ref, rtol=1e-5)


def test_attention_definitions():
    f = torch.randn(2, 3, 4, 5)
    sp, ch = fgd_attention(f, 0.5)
    assert sp.shape == (2, 4, 5) and ch.shape == (2, 3)
    assert torch.allclose(sp.sum(dim=(1, 2)), torch.full((2,), 20.0))  # H * W
    assert torch.allclose(ch.sum(dim=1), torch.full((2,), 3.0))  # C
    assert torch.allclose(sp, 20 * torch.softmax(f.abs().mean(1).reshape(2, -1) / 0.5, 1).reshape(2, 4, 5))


def test_global_loss_at_init_is_the_summed_mse_over_n():
    torch.manual_seed(2)
    module = FGDLoss(16, 16, **WEIGHTS)
    s, t = torch.randn(3, 16, 5, 6), torch.randn(3, 16, 5, 6)
    out = module(s, t, torch.zeros(3, 5, 6), torch.zeros(3, 5, 6))
    plain = ((s - t) ** 2).sum() / 3
    assert torch.allclose(out['loss_global'], 5e-6 * plain, rtol=1e-6)
    assert torch.count_nonzero(out['loss_fg']) == 0 and torch.count_nonzero(out['loss_bg']) == 0


def test_gcblock_init():
    block = GlobalContextBlock(8)
    last = block.channel_add[-1]
    assert torch.count_nonzero(last.weight) == 0 and torch.count_nonzero(last.bias) == 0
    assert torch.count_nonzero(block.conv_mask.bias) == 0
    assert isinstance(block.channel_add[1], nn.LayerNorm) and block.channel_add[1].normalized_shape == (4, 1, 1)
    # kaiming normal, fan_in, relu gain: std = sqrt(2 / 8) = 0.5 over 8 weights; a loose check
    assert 0.1 < block.conv_mask.weight.std().item() < 1.5
    f = torch.randn(2, 8, 3, 3)
    assert torch.equal(block(f), f)


# --- the distiller in a DistillationModel ------------------------------------------------------
def test_presets_and_overrides():
    assert PRESETS['one_stage'] == dict(num_levels=5, temp=0.5, alpha_fgd=1e-3, beta_fgd=5e-4,
                                        gamma_fgd=5e-4, lambda_fgd=5e-6)
    d = FGD(preset='two_stage')
    assert d.num_levels == 4 and len(d.losses) == 4
    assert d.student_recorders == {f'fpn{i}': f'neck.fpn_convs.{i}.conv' for i in range(4)}
    assert d.losses[0].alpha_fgd == 5e-5 and d.losses[0].lambda_fgd == 5e-7
    d = FGD(preset='fcos', alpha_fgd=1.0)
    assert d.losses[4].temp == 0.8 and d.losses[4].alpha_fgd == 1.0 and d.losses[4].beta_fgd == 8e-4
    d = FGD(student_channels=[128] * 3, teacher_channels=256, student_modules=['a', 'b', 'c'],
            teacher_modules=['x', 'y', 'z'])
    assert d.num_levels == 3 and d.losses[0].align is not None and d.teacher_recorders['fpn2'] == 'z'
    with pytest.raises(KeyError, match='preset'):
        FGD(preset='yolo')


def test_distiller_losses_masks_once_per_batch_and_fp32(monkeypatch):
    calls = []
    real = fgd_module.fgd_masks

    def counting(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(fgd_module, 'fgd_masks', counting)
    model = MODELS.build(distill_model_cfg(fgd_cfg()))
    inputs, samples = make_det_batch(n=2, size=128)
    samples[1].gt_instances = samples[1].gt_instances[:0]  # an image without boxes
    losses = model(inputs, samples, mode='loss')
    assert len(calls) == 1
    assert calls[0] == [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]  # P3-P7 of 128 px
    for i in range(5):
        for term in ('fg', 'bg', 'at', 'global'):
            value = losses[f'distill.fpn{i}.loss_{term}']
            assert value.dtype == torch.float32 and torch.isfinite(value) and value.dim() == 0
    assert losses['distill.fpn0.loss_fg'] > 0 and losses['distill.fpn0.loss_bg'] > 0


def test_distiller_uses_batch_input_shape_or_legacy_img_shape():
    torch.manual_seed(0)
    inputs, samples = make_det_batch(n=2, size=128, boxes=[[0., 0., 64., 96.]])
    for s in samples:
        s.set_metainfo(dict(img_shape=(96, 64)))  # unpadded 96x64 images in a 128x128 batch
    outs = {}
    for legacy in (False, True):
        model = MODELS.build(distill_model_cfg(fgd_cfg(legacy_box_scaling=legacy)))
        context_holder = {}
        real_forward = model.distiller.forward

        def spy(student, teacher, context, real_forward=real_forward, holder=context_holder):
            holder['context'] = context
            return real_forward(student, teacher, context)

        model.distiller.forward = spy
        model(inputs, samples, mode='loss')
        (fg, _), = [v for k, v in context_holder['context'].extra.items() if k[0] == 'fgd_masks']
        outs[legacy] = fg[0][0]
    # P3 of 128 px is 16x16 (8 px cells): the box covers cells 0..8 x 0..12 correctly, and the
    # whole grid when stretched by 128/64 and 128/96 (legacy)
    assert torch.count_nonzero(outs[False]) == 9 * 13
    assert torch.count_nonzero(outs[True]) == 16 * 16


def test_gradients_reach_student_align_and_gcblocks_never_the_teacher():
    student = retinanet_cfg(18)
    student['neck']['out_channels'] = 32
    student['bbox_head'].update(in_channels=32, feat_channels=32)
    model = MODELS.build(distill_model_cfg(fgd_cfg(student_channels=32, teacher_channels=64), student=student))
    model.init_weights()
    inputs, samples = make_det_batch(n=2, size=128)
    losses = model(inputs, samples, mode='loss')
    sum(v for k, v in losses.items() if k.startswith('distill.')).backward()
    assert all(p.grad is None for p in model.teacher.parameters())
    assert all(not p.requires_grad for p in model.teacher.parameters())
    for i in range(5):
        conv = model.student.neck.fpn_convs[i].conv
        assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0, i
        level = model.distiller.losses[i]
        assert level.align.weight.grad.abs().sum() > 0
        # zero-initialised last convs: the gradient reaches them first (then the rest, once they move)
        assert level.global_s.channel_add[-1].weight.grad.abs().sum() > 0
        assert level.global_t.channel_add[-1].weight.grad.abs().sum() > 0
    # the distiller's parameters are in the model (the optimizer sees them), the teacher's are not
    names = [n for n, _ in model.named_parameters()]
    assert any(n.startswith('distiller.losses.0.global_t.') for n in names)
    assert not any(n.startswith('teacher.') for n in names)


def test_gcblock_zero_init_survives_model_init_weights():
    model = MODELS.build(distill_model_cfg(fgd_cfg()))
    model.init_weights()
    for level in model.distiller.losses:
        for block in (level.global_s, level.global_t):
            assert torch.count_nonzero(block.channel_add[-1].weight) == 0


def test_registered_through_the_plugin():
    from kdtoolbox.registry import DISTILLERS, LOSSES
    assert DISTILLERS.get('FGD') is FGD
    assert LOSSES.get('FGDLoss') is FGDLoss


# --- inheriting strategy -----------------------------------------------------------------------
def test_student_neck_and_head_inherit_the_teacher_checkpoint_through_init_weights(tmp_path):
    torch.manual_seed(0)
    teacher_cfg = retinanet_cfg(34)
    teacher = MODELS.build(copy.deepcopy(teacher_cfg))
    teacher.init_weights()
    ckpt = tmp_path / 'teacher.pth'
    torch.save({'state_dict': teacher.state_dict(), 'meta': {}}, ckpt)

    # written as a config file, as a user would (R18 and R34 FPNs have the same shapes)
    cfg_file = tmp_path / 'fgd_inherit.py'
    cfg_file.write_text(
        f"student = {retinanet_cfg(18)!r}\n"
        f"student['neck']['init_cfg'] = dict(type='Pretrained', checkpoint={str(ckpt)!r}, prefix='neck.')\n"
        f"student['bbox_head']['init_cfg'] = dict(type='Pretrained', checkpoint={str(ckpt)!r}, prefix='bbox_head.')\n"
        f"model = dict(type='kdtoolbox.DistillationModel', student=student, teacher={teacher_cfg!r},\n"
        f"             teacher_checkpoint={str(ckpt)!r}, distiller=dict(type='FGD', student_channels=64,\n"
        f"             teacher_channels=64))\n")
    model = MODELS.build(Config.fromfile(str(cfg_file)).model)
    model.init_weights()
    t_state = teacher.state_dict()
    s_state = model.student.state_dict()
    inherited = [k for k in s_state if k.startswith(('neck.', 'bbox_head.'))]
    assert len(inherited) > 10
    for key in inherited:
        assert torch.equal(s_state[key], t_state[key]), key
    # the backbone is not inherited (different depth anyway) and the teacher is untouched
    assert not torch.equal(s_state['backbone.conv1.weight'], t_state['backbone.conv1.weight'])
    for key, value in model.teacher.state_dict().items():
        assert torch.equal(value, t_state[key])
    # control: without the init_cfgs the same init_weights() leaves them different
    plain = MODELS.build(distill_model_cfg(fgd_cfg(), teacher=teacher_cfg, teacher_checkpoint=str(ckpt)))
    plain.init_weights()
    assert not torch.equal(plain.student.state_dict()['bbox_head.retina_cls.weight'],
                           t_state['bbox_head.retina_cls.weight'])


# --- the official configs ----------------------------------------------------------------------
def offline(cfg_path):
    """A config's model dict with nothing to download: no teacher checkpoint, no pretrained or
    inherited init, the teacher as a model dict."""
    cfg = Config.fromfile(f'{ROOT}/{cfg_path}')
    model = cfg.model
    model.teacher_checkpoint = None
    if isinstance(model.teacher, str):  # 'mmdet::...' as the engine resolves it
        from mmengine.hub import get_config
        model.teacher = get_config(model.teacher).model
        model.teacher['_scope_'] = 'mmdet'
    for net in (model.student, model.teacher):
        net.backbone.init_cfg = None
        for part in ('neck', 'bbox_head', 'rpn_head', 'roi_head'):
            if part in net and 'init_cfg' in net[part]:
                net[part].init_cfg = None
    return cfg


@pytest.mark.slow
def test_fgd_retinanet_config_builds_and_trains_one_step():
    from mmdet.structures import DetDataSample
    from mmengine.optim import build_optim_wrapper
    from mmengine.structures import InstanceData

    cfg = Config.fromfile(f'{ROOT}/configs/fgd_retinanet.py')
    ckpt = 'checkpoints/retinanet_x101_64x4d_fpn_1x_coco_20200130-366f5af1.pth'
    assert cfg.model.teacher == 'mmdet::retinanet/retinanet_x101-64x4d_fpn_1x_coco.py'
    assert cfg.model.teacher_checkpoint == ckpt
    assert cfg.model.student.neck.init_cfg == dict(type='Pretrained', checkpoint=ckpt, prefix='neck.')
    assert cfg.model.student.bbox_head.init_cfg == dict(type='Pretrained', checkpoint=ckpt, prefix='bbox_head.')
    assert cfg.optim_wrapper.clip_grad == dict(max_norm=35, norm_type=2)
    assert cfg.train_cfg.max_epochs == 24

    cfg = offline('configs/fgd_retinanet.py')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    assert type(model.teacher.backbone).__name__ == 'ResNeXt' and model.student.backbone.depth == 50
    assert type(model.distiller).__name__ == 'FGD' and len(model.distiller.losses) == 5
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    sample = DetDataSample(metainfo=dict(img_shape=(128, 128), ori_shape=(128, 128), scale_factor=(1.0, 1.0)))
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[10., 20., 70., 100.]]), labels=torch.tensor([3]))
    data = dict(inputs=[torch.randint(0, 256, (3, 128, 128), dtype=torch.uint8)], data_samples=[sample])
    before = model.student.neck.fpn_convs[0].conv.weight.detach().clone()
    model.train()
    log_vars = model.train_step(data, optim_wrapper)
    for i in range(5):
        for term in ('fg', 'bg', 'at', 'global'):
            assert math.isfinite(float(torch.as_tensor(log_vars[f'distill.fpn{i}.loss_{term}']).detach()))
    assert math.isfinite(float(torch.as_tensor(log_vars['loss']).detach()))
    assert not torch.equal(before, model.student.neck.fpn_convs[0].conv.weight)


@pytest.mark.slow
@pytest.mark.parametrize('path, levels, preset, student, teacher', [
    ('configs/fgd_faster_rcnn.py', 4, 'two_stage', 'FasterRCNN', 'CascadeRCNN'),
    ('configs/fgd_gfl.py', 5, 'one_stage', 'GFL', 'GFL'),
    ('configs/fgd_fcos.py', 5, 'fcos', 'FCOS', 'FCOS'),
])
def test_other_official_configs_build(path, levels, preset, student, teacher):
    cfg = Config.fromfile(f'{ROOT}/{path}')
    assert cfg.model.distiller.preset == preset and cfg.model.distiller.num_levels == levels
    assert cfg.optim_wrapper.clip_grad == dict(max_norm=35, norm_type=2)
    hp = {k: cfg.model.distiller[k] for k in ('temp', 'alpha_fgd', 'beta_fgd', 'gamma_fgd', 'lambda_fgd')}
    assert hp == {k: v for k, v in PRESETS[preset].items() if k != 'num_levels'}
    inherits = path != 'configs/fgd_faster_rcnn.py'
    assert ('init_cfg' in cfg.model.student.neck) == inherits
    model = MODELS.build(offline(path).model)  # recorders resolve every level on both models
    assert type(model.student).__name__ == student and type(model.teacher).__name__ == teacher
    assert len(model.distiller.losses) == levels


# --- training through tools/train.py -----------------------------------------------------------
@pytest.mark.slow
def test_two_iterations_through_train_py_with_inheritance(tmp_path):
    from test_train_e2e import data_options, run

    # a teacher checkpoint (random weights: only the mechanics are under test here)
    teacher_cfg = Config.fromfile(f'{ROOT}/configs/demo/retinanet_r50_shapes_teacher.py').model
    teacher_cfg['_scope_'] = 'mmdet'
    teacher = MODELS.build(teacher_cfg)
    ckpt = tmp_path / 'teacher.pth'
    torch.save({'state_dict': teacher.state_dict(), 'meta': {}}, ckpt)
    del teacher
    work = tmp_path / 'fgd'
    out = run(['tools/train.py', 'configs/demo/fgd_retinanet_shapes.py', '--work-dir', str(work),
               '--cfg-options', f'model.teacher_checkpoint={ckpt}',
               f'model.student.neck.init_cfg.checkpoint={ckpt}',
               f'model.student.bbox_head.init_cfg.checkpoint={ckpt}',
               'train_cfg.max_epochs=1', 'train_cfg.val_interval=10',  # no validation: 2 iterations only
               *[o for o in data_options(tmp_path / 'shapes') if not o.startswith('train_cfg.val_interval')]])
    assert f'load bbox_head. in model from: {ckpt}' in out, out[-3000:]
    for term in ('fg', 'bg', 'at', 'global'):
        assert re.search(rf'distill\.fpn4\.loss_{term}: [0-9.e-]+', out), (term, out[-3000:])
    saved = torch.load(work / 'epoch_1.pth', map_location='cpu')
    assert saved['meta']['iter'] == 2
    assert any(k.startswith('distiller.losses.0.global_s.') for k in saved['state_dict'])
    assert not any(k.startswith('teacher.') for k in saved['state_dict'])
