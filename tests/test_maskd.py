"""MasKD: the Dice diversity, the mask module and the masked distillation loss against plain loops,
stage 1 (only the tokens learn; the checkpoint holds only them), stage 2 (tokens loaded strictly and
frozen, customised masks, regression-head KD, gradients), the official configs and both demo
stages through tools/train.py."""
import math

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS

from conftest import ROOT, distill_model_cfg, faster_rcnn_cfg, make_det_batch, retinanet_cfg
from kdtoolbox.engine import DistillContext, Records, RecordSpec
from kdtoolbox_plugins.detection.maskd import (MasKD, MaskModule, dice_diversity, masked_distillation_loss,
                                               reg_head_loss)


# --- references written plainly from the paper --------------------------------------------------
def t2l(x):
    return x.detach().double().tolist()


def loop_dice(m):
    """mean over n and i != j of 2 sum(M_i M_j) / (sum M_i^2 + sum M_j^2); m: lists [n][k][h][w]."""
    total, count = 0.0, 0
    for img in m:
        flat = [[v for row in mk for v in row] for mk in img]
        for i in range(len(flat)):
            for j in range(len(flat)):
                if i == j:
                    continue
                a = sum(x * y for x, y in zip(flat[i], flat[j]))
                b = sum(x * x for x in flat[i]) + sum(y * y for y in flat[j])
                total += 2 * a / b
                count += 1
    return total / count


def sigmoid(v):
    return 1.0 / (1.0 + math.exp(-v))


def loop_masks(f, tokens):
    """sigmoid(sum_c token[k][c] f[c][h][w]) for one image f [c][h][w]: [k][h][w]."""
    c_n, h_n, w_n = len(f), len(f[0]), len(f[0][0])
    return [[[sigmoid(sum(tok[c] * f[c][h][w] for c in range(c_n))) for w in range(w_n)] for h in range(h_n)]
            for tok in tokens]


def loop_token_weights(f, module):
    """softmax_k(conv1x1(mean_hw(conv3x3(f)))) for one image, conv weights from ``module``."""
    w3, b3 = t2l(module.prob[0].weight), t2l(module.prob[0].bias)
    w1, b1 = t2l(module.prob[2].weight), t2l(module.prob[2].bias)
    c_n, h_n, w_n = len(f), len(f[0]), len(f[0][0])

    def at(c, h, w):
        return f[c][h][w] if 0 <= h < h_n and 0 <= w < w_n else 0.0
    pooled = []
    for o in range(len(w3)):
        acc = 0.0
        for h in range(h_n):
            for w in range(w_n):
                acc += b3[o] + sum(w3[o][c][dy][dx] * at(c, h + dy - 1, w + dx - 1)
                                   for c in range(c_n) for dy in range(3) for dx in range(3))
        pooled.append(acc / (h_n * w_n))
    logits = [b1[k] + sum(w1[k][o][0][0] * pooled[o] for o in range(len(pooled))) for k in range(len(w1))]
    z = sum(math.exp(v) for v in logits)
    return [math.exp(v) / z for v in logits]


def loop_maskd(s, t, masks, weights):
    """mean_n sum_k w_k mean_c [sum_hw (M s - M t)^2 / sum_hw M] (weights None: mean over k)."""
    total = 0.0
    for n in range(len(s)):
        per_token = []
        for k in range(len(masks[n])):
            m = masks[n][k]
            area = sum(v for row in m for v in row)
            per_c = []
            for c in range(len(s[n])):
                acc = sum((m[h][w] * s[n][c][h][w] - m[h][w] * t[n][c][h][w]) ** 2
                          for h in range(len(m)) for w in range(len(m[0])))
                per_c.append(acc / area if area > 0 else 0.0)
            per_token.append(sum(per_c) / len(per_c))
        if weights is None:
            total += sum(per_token) / len(per_token)
        else:
            total += sum(w * d for w, d in zip(weights[n], per_token))
    return total / len(s)


def loop_conv1x1(x, weight, bias):
    """A 1x1 conv by loops: x [n][c][h][w]."""
    w, b = t2l(weight), t2l(bias)
    return [[[[b[o] + sum(w[o][c][0][0] * img[c][h][j] for c in range(len(img))) for j in range(len(img[0][0]))]
              for h in range(len(img[0]))] for o in range(len(w))] for img in x]


def loop_smooth_l1(a, b, beta=1.0):
    flat_a, flat_b = torch.as_tensor(a).flatten().tolist(), torch.as_tensor(b).flatten().tolist()
    vals = []
    for x, y in zip(flat_a, flat_b):
        d = abs(x - y)
        vals.append(0.5 * d * d / beta if d < beta else d - 0.5 * beta)
    return sum(vals) / len(vals)


# --- the math ----------------------------------------------------------------------------------
def test_dice_matches_loops_and_hand_computed_values():
    g = torch.Generator().manual_seed(0)
    masks = torch.rand(2, 3, 2, 3, generator=g, dtype=torch.float64)
    assert dice_diversity(masks).item() == pytest.approx(loop_dice(t2l(masks)), rel=1e-9)
    # tokens 0 and 1 identical (Dice 1), token 2 disjoint from both (Dice 0): 2 of 6 pairs -> 1/3
    a = torch.tensor([[1., 1., 0.], [0., 0., 0.]])
    b = torch.tensor([[0., 0., 1.], [1., 1., 1.]])
    assert dice_diversity(torch.stack([a, a, b])[None]).item() == pytest.approx(1 / 3)
    # one token: no pair, no diversity loss (the official mean over no pairs is NaN)
    assert dice_diversity(masks[:, :1]).item() == 0.0


def test_mask_module_masks_weights_and_stage1_features_match_loops():
    torch.manual_seed(0)
    module = MaskModule(channels=3, num_tokens=2).double()
    feat = torch.randn(2, 3, 2, 3, dtype=torch.float64)
    masks = module.masks(feat)
    weights = module.token_weights(feat)
    out, out_masks = module(feat)
    assert torch.equal(out_masks, masks)
    for n in range(2):
        f = t2l(feat[n])
        ref_m = loop_masks(f, t2l(module.mask_token))
        ref_w = loop_token_weights(f, module)
        assert torch.allclose(masks[n], torch.tensor(ref_m, dtype=torch.float64))
        assert torch.allclose(weights[n], torch.tensor(ref_w, dtype=torch.float64))
        # sum_k w_k (F * M_k)
        ref_out = [[[sum(ref_w[k] * f[c][h][w] * ref_m[k][h][w] for k in range(2)) for w in range(3)]
                    for h in range(2)] for c in range(3)]
        assert torch.allclose(out[n], torch.tensor(ref_out, dtype=torch.float64))
    # without the weight branch the K masked features are summed
    plain = MaskModule(channels=3, num_tokens=2, weight_mask=False).double()
    assert plain.prob is None and plain.token_weights(feat) is None
    assert torch.allclose(plain(feat)[0], (feat[:, None] * plain.masks(feat)[:, :, None]).sum(1))


def test_mask_module_init():
    torch.manual_seed(0)
    module = MaskModule(channels=256, num_tokens=6)
    assert module.mask_token.shape == (6, 256)
    assert abs(module.mask_token.std().item() - 0.01) < 0.001  # N(0, 0.01), 1536 samples
    conv3 = module.prob[0]
    assert abs(conv3.weight.std().item() - math.sqrt(2.0 / (9 * 256))) < 0.002  # fan-out init
    assert not conv3.bias.any() and not module.prob[2].bias.any()
    assert not hasattr(module, 'init_weights')  # a parent's init_weights() must not reset tokens


@pytest.mark.parametrize('with_weights', [True, False])
def test_masked_loss_matches_loops(with_weights):
    g = torch.Generator().manual_seed(1)
    s = torch.randn(2, 3, 2, 3, generator=g, dtype=torch.float64)
    t = torch.randn(2, 3, 2, 3, generator=g, dtype=torch.float64)
    masks = torch.rand(2, 4, 2, 3, generator=g, dtype=torch.float64)
    weights = torch.rand(2, 4, generator=g, dtype=torch.float64).softmax(1) if with_weights else None
    got = masked_distillation_loss(s, t, masks, weights)
    ref = loop_maskd(t2l(s), t2l(t), t2l(masks), t2l(weights) if with_weights else None)
    assert got.item() == pytest.approx(ref, rel=1e-9)


def test_masked_loss_hand_computed():
    # one token, mask 1 on 2 of 4 cells, S - T = 2 on every cell and channel:
    # sum_hw (M (S - T))^2 = 2 * 4 = 8, / sum M = 2 -> 4 per channel; weight 1 -> 4
    s = torch.full((1, 2, 2, 2), 3.0)
    t = torch.full((1, 2, 2, 2), 1.0)
    m = torch.tensor([[[[1., 0.], [1., 0.]]]])
    assert masked_distillation_loss(s, t, m, torch.ones(1, 1)).item() == pytest.approx(4.0)
    # a half mask squares: M = 0.5 everywhere -> sum (0.5 * 2)^2 = 4 cells * 1 = 4, / sum M = 2 -> 2
    assert masked_distillation_loss(s, t, torch.full((1, 1, 2, 2), 0.5), None).item() == pytest.approx(2.0)


def test_token_with_an_all_zero_mask_is_guarded():
    g = torch.Generator().manual_seed(2)
    s = torch.randn(1, 2, 3, 3, generator=g, requires_grad=True)
    t = torch.randn(1, 2, 3, 3, generator=g)
    masks = torch.rand(1, 3, 3, 3, generator=g)
    masks[0, 1] = 0.0  # sigmoid underflow: the official code divides 0 by 0 here
    weights = torch.tensor([[0.2, 0.5, 0.3]])
    loss = masked_distillation_loss(s, t, masks, weights)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(s.grad).all()
    ref = loop_maskd(t2l(s), t2l(t), t2l(masks), t2l(weights))  # the empty token contributes 0
    assert loss.item() == pytest.approx(ref, rel=1e-5)
    # and through real tokens: a token anti-aligned with positive features has sigmoid(-inf) = 0
    module = MaskModule(2, 2, weight_mask=False)
    with torch.no_grad():
        module.mask_token.copy_(torch.tensor([[1e4, 1e4], [0.1, 0.1]]))
        assert not module.masks(-t.abs() - 1)[:, 0].any()


def test_reg_head_loss_matches_loops():
    g = torch.Generator().manual_seed(3)
    a, b = torch.randn(2, 4, 3, 3, generator=g) * 2, torch.randn(2, 4, 3, 3, generator=g)
    assert reg_head_loss(a, b).item() == pytest.approx(loop_smooth_l1(a, b), rel=1e-5)
    assert reg_head_loss(a, b, beta=0.5).item() == pytest.approx(loop_smooth_l1(a, b, 0.5), rel=1e-5)
    assert reg_head_loss(a, b, 'l1').item() == pytest.approx((a - b).abs().mean().item(), rel=1e-6)


# --- stage 2: the distiller against loops ------------------------------------------------------
def finite(value):
    return math.isfinite(float(torch.as_tensor(value).detach()))


def records(owner, neck, reg):
    specs = {'neck': RecordSpec('neck'), 'reg': RecordSpec('bbox_head.retina_reg')}
    return Records(owner, {'neck': [tuple(neck)], 'reg': list(reg)}, specs)


@pytest.mark.parametrize('iteration, customised', [(9, False), (10, True)])
def test_distiller_matches_loops_with_channel_mismatch_and_custom_masks(iteration, customised):
    torch.manual_seed(4)
    kd = MasKD(student_channels=3, teacher_channels=2, num_levels=2, num_tokens=2, loss_weight=7.0,
               custom_mask_warmup=10, reg_weight=1.0).double()
    g = torch.Generator().manual_seed(5)
    s_neck = [torch.randn(2, 3, 2, 3, generator=g, dtype=torch.float64, requires_grad=True),
              torch.randn(2, 3, 1, 2, generator=g, dtype=torch.float64, requires_grad=True)]
    t_neck = [torch.randn(2, 2, 2, 3, generator=g, dtype=torch.float64),
              torch.randn(2, 2, 1, 2, generator=g, dtype=torch.float64)]
    s_reg = [torch.randn(2, 4, 2, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    t_reg = [torch.randn(2, 4, 2, 3, generator=g, dtype=torch.float64) for _ in range(2)]
    context = DistillContext(iteration=iteration)
    losses = kd(records('student', s_neck, s_reg), records('teacher', t_neck, t_reg), context)
    assert set(losses) == {'fpn0.loss_mask', 'fpn1.loss_mask', 'reg0.loss_reg', 'reg1.loss_reg'}
    for level in range(2):
        module = kd.mask_modules[level]
        s = loop_conv1x1(t2l(s_neck[level]), kd.align[level].weight, kd.align[level].bias)
        t = t2l(t_neck[level])
        tokens = t2l(module.mask_token)
        masks, weights = [], []
        for n in range(2):
            m = loop_masks(t[n], tokens)
            if customised:  # times the student's own masks
                ms = loop_masks(s[n], tokens)
                m = [[[m[k][h][w] * ms[k][h][w] for w in range(len(m[0][0]))] for h in range(len(m[0]))]
                     for k in range(2)]
            masks.append(m)
            weights.append(loop_token_weights(t[n], module))
        ref = 7.0 * loop_maskd(s, t, masks, weights)
        assert losses[f'fpn{level}.loss_mask'].item() == pytest.approx(ref, rel=1e-9), level
        assert losses[f'reg{level}.loss_reg'].item() == pytest.approx(
            loop_smooth_l1(s_reg[level], t_reg[level]), rel=1e-9)
    sum(losses.values()).backward()
    assert all(x.grad is not None and x.grad.abs().sum() > 0 for x in s_neck + s_reg)
    assert all(p.grad is not None for p in kd.align.parameters())
    assert all(p.grad is None for p in kd.mask_modules.parameters())  # frozen tokens


def test_distiller_errors_name_the_problem():
    with pytest.raises(ValueError, match='reg_loss'):
        MasKD(reg_loss='mse')
    with pytest.raises(ValueError, match='5 levels but 3 student channel counts'):
        MasKD(student_channels=[256, 256, 256])
    kd = MasKD(student_channels=4, teacher_channels=4, num_levels=3, num_tokens=2, reg_module=None)
    neck = [torch.randn(1, 4, 2, 2)] * 2
    specs = {'neck': RecordSpec('neck')}
    with pytest.raises(ValueError, match='expected 3 levels'):
        kd(Records('student', {'neck': [neck]}, specs), Records('teacher', {'neck': [neck]}, specs),
           DistillContext())


# --- stage 1 -----------------------------------------------------------------------------------
def token_learner(**kwargs):
    cfg = dict(type='kdtoolbox.MasKDTokenLearner', teacher=retinanet_cfg(18), channels=64, num_levels=5)
    cfg.update(kwargs)
    return MODELS.build(cfg)


def test_stage1_masks_the_neck_and_a_step_changes_only_the_tokens():
    from mmengine.optim import build_optim_wrapper
    torch.manual_seed(0)
    learner = token_learner()
    # the checkpoint will hold exactly the mask modules, with the official key names
    keys = set(learner.state_dict())
    assert keys == {f'mask_modules.{lvl}.{p}' for lvl in range(5)
                    for p in ('mask_token', 'prob.0.weight', 'prob.0.bias', 'prob.2.weight', 'prob.2.bias')}
    detector = learner.teacher
    assert all(not p.requires_grad for p in detector.parameters())
    inputs, samples = make_det_batch(2, 64)
    samples[1].gt_instances = samples[1].gt_instances[:0]  # an image without boxes
    # the neck's outputs are replaced by F * sum_k w_k M_k
    with torch.no_grad():
        feats = detector.backbone(inputs)
        raw = detector.neck.forward(feats)  # .forward bypasses the hook
        masked = detector.neck(feats)
        for lvl in range(5):
            assert torch.allclose(masked[lvl], learner.mask_modules[lvl](raw[lvl])[0])
    before = {k: v.clone() for k, v in detector.state_dict().items()}  # BN running stats included
    tokens_before = {k: v.clone() for k, v in learner.state_dict().items()}
    optim = build_optim_wrapper(learner, dict(optimizer=dict(type='Adam', lr=0.01, weight_decay=1e-3)))
    learner.train()
    assert detector.training and not detector.backbone.bn1.training  # BN in eval, as the official hook
    log_vars = learner.train_step(dict(inputs=list((inputs * 50 + 100).clamp(0, 255).byte()),
                                       data_samples=samples), optim)
    for key in ('loss_cls', 'loss_bbox', *[f'loss_div{lvl}' for lvl in range(5)]):
        assert finite(log_vars[key]), key
    after = detector.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # bit-identical detector
    assert all(p.grad is None for p in detector.parameters())
    changed = [k for k, v in learner.state_dict().items() if not torch.equal(v, tokens_before[k])]
    assert any(k.endswith('mask_token') for k in changed) and any('.prob.' in k for k in changed)


def test_stage1_learns_diverse_tokens():
    from mmengine.optim import build_optim_wrapper
    torch.manual_seed(0)
    learner = token_learner()
    optim = build_optim_wrapper(learner, dict(optimizer=dict(type='Adam', lr=0.01, weight_decay=1e-3)))
    inputs, samples = make_det_batch(2, 64)
    data = dict(inputs=list((inputs * 50 + 100).clamp(0, 255).byte()), data_samples=samples)
    learner.train()
    logs = [learner.train_step(data, optim) for _ in range(6)]
    first, last = logs[0], logs[-1]
    assert float(last['loss_div0']) < 0.9 * float(first['loss_div0'])  # the masks move apart
    assert float(last['loss']) < float(first['loss'])


def test_stage1_errors():
    with pytest.raises(KeyError, match="no module 'necks'"):
        token_learner(neck='necks')
    learner = token_learner(num_levels=4, channels=64)
    inputs, samples = make_det_batch(1, 64)
    with pytest.raises(ValueError, match='gave 5 outputs but there are 4 mask modules'):
        learner.loss(inputs, samples)


# --- stage 2 with the stage-1 tokens ----------------------------------------------------------
def save_tokens(path, learner):
    torch.save({'state_dict': learner.state_dict(), 'meta': {}}, path)
    return str(path)


def test_stage2_loads_the_tokens_frozen_and_trains_the_student(tmp_path):
    from mmengine.optim import build_optim_wrapper
    torch.manual_seed(0)
    learner = token_learner(teacher=retinanet_cfg(34))
    with torch.no_grad():
        for p in learner.mask_modules.parameters():
            p.add_(torch.randn_like(p))  # "trained" tokens, away from any fresh init
    ckpt = save_tokens(tmp_path / 'iter_2.pth', learner)
    model = MODELS.build(distill_model_cfg(dict(type='MasKD', tokens_checkpoint=ckpt, student_channels=64,
                                                teacher_channels=64, custom_mask_warmup=0)))
    model.init_weights()  # what the runner does: must not reset the loaded tokens
    kd = model.distiller
    for key, value in learner.mask_modules.state_dict().items():
        assert torch.equal(kd.mask_modules.state_dict()[key], value), key
    assert all(not p.requires_grad for p in kd.mask_modules.parameters())
    frozen = {k: v.clone() for k, v in kd.mask_modules.state_dict().items()}
    align = kd.align[0].weight.detach().clone()
    student = model.student.neck.fpn_convs[0].conv.weight.detach().clone()
    optim = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=0.02, momentum=0.9,
                                                           weight_decay=1e-4)))
    inputs, samples = make_det_batch(2, 64, boxes=[])  # no boxes: MasKD needs none
    model.train()
    log_vars = model.train_step(dict(inputs=list((inputs * 50 + 100).clamp(0, 255).byte()),
                                     data_samples=samples), optim)
    for lvl in range(5):
        assert finite(log_vars[f'distill.fpn{lvl}.loss_mask'])
        assert finite(log_vars[f'distill.reg{lvl}.loss_reg'])
    assert all(torch.equal(v, frozen[k]) for k, v in kd.mask_modules.state_dict().items())
    assert all(p.grad is None for p in kd.mask_modules.parameters())
    assert all(p.grad is None for p in model.teacher.parameters())
    assert not torch.equal(align, kd.align[0].weight)
    assert not torch.equal(student, model.student.neck.fpn_convs[0].conv.weight)
    # the distiller's mask modules are saved with the student (keys under distiller.mask_modules)
    assert 'distiller.mask_modules.0.mask_token' in model.state_dict()


def test_stage2_gradients_reach_student_and_align_never_teacher_or_tokens():
    torch.manual_seed(0)
    model = MODELS.build(distill_model_cfg(dict(type='MasKD', student_channels=64, teacher_channels=64,
                                                custom_mask_warmup=0)))
    inputs, samples = make_det_batch(2, 64)
    model.train()
    losses = model.loss(inputs, samples)
    distill = sum(v for k, v in losses.items() if k.startswith('distill.'))
    distill.backward()
    assert model.student.neck.fpn_convs[0].conv.weight.grad.abs().sum() > 0
    assert model.student.bbox_head.retina_reg.weight.grad.abs().sum() > 0  # the regression KD
    assert all(p.grad is not None for p in model.distiller.align.parameters())
    assert all(p.grad is None for p in model.teacher.parameters())
    assert all(p.grad is None for p in model.distiller.mask_modules.parameters())


def test_roi_reg_matches_the_teacher_head_on_the_student_rois():
    torch.manual_seed(0)
    model = MODELS.build(distill_model_cfg(
        dict(type='MasKD', student_channels=32, teacher_channels=32, loss_weight=1.0, custom_mask_warmup=7330,
             reg_module=None, roi_reg=True),
        student=faster_rcnn_cfg(18), teacher=faster_rcnn_cfg(34)))
    seen = {}
    roi_head = model.student.roi_head

    def keep(name, value):  # returns None: the hooks must not replace inputs or outputs
        seen.setdefault(name, value)
    hooks = [roi_head.bbox_roi_extractor.register_forward_pre_hook(lambda m, a: keep('rois', a[1])),
             roi_head.bbox_head.fc_reg.register_forward_hook(lambda m, a, out: keep('pred', out))]
    inputs, samples = make_det_batch(2, 64)
    model.train()
    losses = model.loss(inputs, samples)
    for h in hooks:
        h.remove()
    assert set(k for k in losses if k.startswith('distill.')) == \
        {f'distill.fpn{lvl}.loss_mask' for lvl in range(5)} | {'distill.roi_reg.loss_reg'}
    # the teacher's own RoI head (mmdet's _bbox_forward) on its features and the student's RoIs
    with torch.no_grad():
        t_pred = model.teacher.roi_head._bbox_forward(model.teacher.extract_feat(inputs), seen['rois'])['bbox_pred']
    assert t_pred.shape == seen['pred'].shape and t_pred.shape[0] == seen['rois'].shape[0] > 0
    expected = loop_smooth_l1(seen['pred'].detach(), t_pred)
    assert losses['distill.roi_reg.loss_reg'].item() == pytest.approx(expected, rel=1e-5)
    losses['distill.roi_reg.loss_reg'].backward()
    assert roi_head.bbox_head.fc_reg.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.teacher.parameters())


def test_tokens_checkpoint_errors_name_file_and_keys(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(FileNotFoundError, match='tokens_checkpoint: no checkpoint at'):
        MasKD(tokens_checkpoint=str(tmp_path / 'missing.pth'))
    with pytest.raises(FileNotFoundError, match='holds no checkpoint'):
        MasKD(tokens_checkpoint=str(tmp_path))
    other = tmp_path / 'other.pth'
    torch.save({'state_dict': {'neck.conv.weight': torch.zeros(1)}}, other)
    with pytest.raises(KeyError, match='holds no mask_modules'):
        MasKD(tokens_checkpoint=str(other))
    four = tmp_path / 'four_levels.pth'
    learner_state = {f'mask_modules.{k}': v for k, v in
                     MasKD(student_channels=8, teacher_channels=8, num_levels=4).mask_modules.state_dict().items()}
    torch.save({'state_dict': learner_state}, four)
    with pytest.raises(KeyError) as err:
        MasKD(tokens_checkpoint=str(four), student_channels=8, teacher_channels=8, num_levels=5)
    assert str(four) in str(err.value) and "'mask_modules.4.mask_token'" in str(err.value)
    with pytest.raises(KeyError, match='unexpected keys'):
        MasKD(tokens_checkpoint=str(four), student_channels=8, teacher_channels=8, num_levels=4,
              weight_mask=False)
    with pytest.raises(ValueError, match=r'mask_modules.0.mask_token has shape \(6, 8\)'):
        MasKD(tokens_checkpoint=str(four), student_channels=8, teacher_channels=8, num_levels=4,
              num_tokens=5)
    # a prefix before mask_modules (an official full-model checkpoint) is dropped; a work dir works
    prefixed = tmp_path / 'run'
    prefixed.mkdir()
    torch.save({'state_dict': {f'module.{k}': v for k, v in learner_state.items()}}, prefixed / 'iter_9.pth')
    (prefixed / 'last_checkpoint').write_text(str(prefixed / 'iter_9.pth'))
    kd = MasKD(tokens_checkpoint=str(prefixed), student_channels=8, teacher_channels=8, num_levels=4)
    assert torch.equal(kd.mask_modules[3].mask_token, learner_state['mask_modules.3.mask_token'])


def test_registered_through_the_plugin():
    from kdtoolbox.registry import DISTILLERS
    from kdtoolbox.registry import MODELS as KD_MODELS
    assert DISTILLERS.get('MasKD') is MasKD
    assert KD_MODELS.get('MasKDTokenLearner').__name__ == 'MasKDTokenLearner'


# --- the official configs ----------------------------------------------------------------------
def offline_teacher(model):
    from mmengine.hub import get_config
    teacher = get_config(model.teacher).model
    teacher['_scope_'] = 'mmdet'
    return teacher


@pytest.mark.slow
@pytest.mark.parametrize('path, teacher, ckpt, optimizer', [
    ('configs/maskd_tokens_retinanet.py', 'mmdet::retinanet/retinanet_r101_fpn_2x_coco.py',
     'checkpoints/retinanet_r101_fpn_2x_coco_20200131-5560aee8.pth',
     dict(type='Adam', lr=0.01, weight_decay=1e-3)),
    ('configs/maskd_tokens_faster_rcnn.py', 'mmdet::faster_rcnn/faster-rcnn_r101_fpn_2x_coco.py',
     'checkpoints/faster_rcnn_r101_fpn_2x_coco_bbox_mAP-0.398_20200504_210455-1d2dac9c.pth',
     dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=1e-4)),
])
def test_official_stage1_configs_build(path, teacher, ckpt, optimizer):
    cfg = Config.fromfile(f'{ROOT}/{path}')
    assert cfg.model.type == 'kdtoolbox.MasKDTokenLearner'
    assert cfg.model.teacher == teacher and cfg.model.teacher_checkpoint == ckpt
    assert cfg.train_cfg.type == 'IterBasedTrainLoop' and cfg.train_cfg.max_iters == 2000
    assert cfg.optim_wrapper.optimizer == optimizer
    assert [s['type'] for s in cfg.param_scheduler] == ['CosineAnnealingLR']
    assert cfg.param_scheduler[0].eta_min == 1e-6
    cfg.model.teacher = offline_teacher(cfg.model)
    cfg.model.teacher_checkpoint = None
    learner = MODELS.build(cfg.model)
    assert learner.teacher.backbone.depth == 101 and len(learner.mask_modules) == 5
    assert learner.mask_modules[0].mask_token.shape == (6, 256)


@pytest.mark.slow
def test_official_stage2_config_builds_and_trains_one_step():
    from mmdet.structures import DetDataSample
    from mmengine.optim import build_optim_wrapper
    from mmengine.structures import InstanceData

    cfg = Config.fromfile(f'{ROOT}/configs/maskd_retinanet.py')
    ckpt = 'checkpoints/retinanet_r101_fpn_2x_coco_20200131-5560aee8.pth'
    assert cfg.model.teacher == 'mmdet::retinanet/retinanet_r101_fpn_2x_coco.py'
    assert cfg.model.teacher_checkpoint == ckpt
    assert cfg.model.student.neck.init_cfg == dict(type='Pretrained', checkpoint=ckpt, prefix='neck.')
    assert cfg.model.student.bbox_head.init_cfg == dict(type='Pretrained', checkpoint=ckpt, prefix='bbox_head.')
    kd = cfg.model.distiller
    assert (kd.loss_weight, kd.custom_mask_warmup, kd.num_tokens, kd.reg_loss) == (7.0, 7000, 6, 'l1')
    assert kd.tokens_checkpoint == 'work_dirs/maskd_tokens_retinanet/iter_2000.pth'
    assert cfg.optim_wrapper.optimizer.lr == 0.02 and cfg.optim_wrapper.clip_grad == dict(max_norm=35, norm_type=2)
    assert cfg.param_scheduler[0].end == 1000 and cfg.train_cfg.max_epochs == 24

    model_cfg = cfg.model
    model_cfg.teacher = offline_teacher(model_cfg)
    model_cfg.teacher_checkpoint = None
    model_cfg.distiller.tokens_checkpoint = None
    model_cfg.student.backbone.init_cfg = None
    model_cfg.student.neck.init_cfg = model_cfg.student.bbox_head.init_cfg = None
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.init_weights()
    assert model.teacher.backbone.depth == 101 and model.student.backbone.depth == 50
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    sample = DetDataSample(metainfo=dict(img_shape=(96, 96), ori_shape=(96, 96), scale_factor=(1.0, 1.0)))
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[10., 20., 70., 90.]]), labels=torch.tensor([3]))
    model.train()
    log_vars = model.train_step(dict(inputs=[torch.randint(0, 256, (3, 96, 96), dtype=torch.uint8)],
                                     data_samples=[sample]), optim_wrapper)
    for lvl in range(5):
        assert finite(log_vars[f'distill.fpn{lvl}.loss_mask'])
        assert finite(log_vars[f'distill.reg{lvl}.loss_reg'])


@pytest.mark.slow
def test_official_faster_rcnn_config_builds_and_trains_one_step():
    from mmdet.structures import DetDataSample
    from mmengine.optim import build_optim_wrapper
    from mmengine.structures import InstanceData

    cfg = Config.fromfile(f'{ROOT}/configs/maskd_faster_rcnn.py')
    kd = cfg.model.distiller
    assert (kd.loss_weight, kd.custom_mask_warmup, kd.reg_module, kd.roi_reg, kd.reg_loss) == \
        (1.0, 7330, None, True, 'smooth_l1')
    assert 'init_cfg' not in cfg.model.student.neck  # no inheritance for Faster R-CNN
    assert cfg.optim_wrapper.optimizer.lr == 0.02 and cfg.optim_wrapper.get('clip_grad') is None
    model_cfg = cfg.model
    model_cfg.teacher = offline_teacher(model_cfg)
    model_cfg.teacher_checkpoint = None
    model_cfg.distiller.tokens_checkpoint = None
    model_cfg.student.backbone.init_cfg = None
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.init_weights()
    assert model.teacher.backbone.depth == 101 and model.student.backbone.depth == 50
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    sample = DetDataSample(metainfo=dict(img_shape=(96, 96), ori_shape=(96, 96), scale_factor=(1.0, 1.0)))
    sample.gt_instances = InstanceData(bboxes=torch.tensor([[10., 20., 70., 90.]]), labels=torch.tensor([3]))
    model.train()
    log_vars = model.train_step(dict(inputs=[torch.randint(0, 256, (3, 96, 96), dtype=torch.uint8)],
                                     data_samples=[sample]), optim_wrapper)
    assert finite(log_vars['distill.roi_reg.loss_reg']) and finite(log_vars['distill.fpn4.loss_mask'])


# --- both demo stages through tools/train.py ---------------------------------------------------
@pytest.mark.slow
def test_demo_stages_train_two_iterations_through_train_py(tmp_path):
    from test_train_e2e import data_options, run

    # a teacher checkpoint (random weights: only the mechanics are under test here)
    teacher_cfg = Config.fromfile(f'{ROOT}/configs/demo/retinanet_r50_shapes_teacher.py').model
    teacher_cfg['_scope_'] = 'mmdet'
    teacher = MODELS.build(teacher_cfg)
    ckpt = tmp_path / 'teacher.pth'
    torch.save({'state_dict': teacher.state_dict(), 'meta': {}}, ckpt)
    del teacher
    data = [o for o in data_options(tmp_path / 'shapes') if not o.startswith('train_cfg.val_interval')]

    work1 = tmp_path / 'tokens'
    out = run(['tools/train.py', 'configs/demo/maskd_tokens_retinanet_shapes.py', '--work-dir', str(work1),
               '--cfg-options', f'model.teacher_checkpoint={ckpt}', 'train_cfg.max_iters=2',
               'train_cfg.val_interval=10', 'param_scheduler.0.T_max=2', 'param_scheduler.0.end=2',
               'default_hooks.checkpoint.interval=2', *data])
    assert 'loss_div4' in out, out[-3000:]
    saved = torch.load(work1 / 'iter_2.pth', map_location='cpu')
    assert saved['meta']['iter'] == 2
    assert saved['state_dict'] and all(k.startswith('mask_modules.') for k in saved['state_dict'])

    work2 = tmp_path / 'maskd'
    out = run(['tools/train.py', 'configs/demo/maskd_retinanet_shapes.py', '--work-dir', str(work2),
               '--cfg-options', f'model.teacher_checkpoint={ckpt}',
               f'model.student.neck.init_cfg.checkpoint={ckpt}',
               f'model.student.bbox_head.init_cfg.checkpoint={ckpt}',
               f'model.distiller.tokens_checkpoint={work1 / "iter_2.pth"}',
               'model.distiller.custom_mask_warmup=1',  # iteration 2 customises the masks
               'train_cfg.max_epochs=1', 'train_cfg.val_interval=10', *data])
    assert f'load bbox_head. in model from: {ckpt}' in out, out[-3000:]
    assert "the masks now include the student's" in out, out[-3000:]
    for key in ('fpn4.loss_mask', 'reg4.loss_reg'):
        assert f'distill.{key}: ' in out, (key, out[-3000:])
    student = torch.load(work2 / 'epoch_1.pth', map_location='cpu')
    assert student['meta']['iter'] == 2
    for key, value in saved['state_dict'].items():  # the tokens stayed as stage 1 wrote them
        assert torch.equal(student['state_dict'][f'distiller.{key}'], value), key
    assert not any(k.startswith('teacher.') for k in student['state_dict'])
