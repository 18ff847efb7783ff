"""AV plugin networks (shapes, modes, the log-mel front end against a plain DFT, errors) and a
DistillationModel training step with each distiller (MNFCSC in both directions, KD, CRD, RKD, XKD)
on random tensors shaped like the data contract's batch; the MNF's 0.2x learning rate through
mmengine's optim wrapper; the plugin's registrations."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmengine.optim import build_optim_wrapper
from mmengine.structures import BaseDataElement

from kdtoolbox.engine import DistillationModel
from kdtoolbox_plugins.av.models import (DEPTHS, FrameResNet, LogMelAudioCNN, NullTeacher, PrecomputedEmbedding,
                                         R2Plus1D, SpatioTemporalConv, hz_to_mel, mel_filterbank, mel_to_hz)

SR = 16000
N_CLS = 3


def batch(n=4, t=8, hw=32, seconds=1.0, embed_dim=None, seed=0, labels=(0, 1, 0, 2)):
    """A batch as AVDataPreprocessor gives it: dict(video [N,3,T,H,W], audio [N,L]) + data samples."""
    g = torch.Generator().manual_seed(seed)
    inputs = dict(video=torch.randn(n, 3, t, hw, hw, generator=g),
                  audio=torch.randn(n, int(SR * seconds), generator=g) * 0.1)
    samples = []
    for i in range(n):
        ds = BaseDataElement(metainfo=dict(video_id=f'v{i}', window_index=0, num_windows=1, sample_idx=i))
        ds.gt_label = torch.tensor([labels[i]])
        if embed_dim:
            ds.teacher_embedding = torch.randn(embed_dim, generator=g)
        samples.append(ds)
    return inputs, samples


# --- networks ----------------------------------------------------------------------------------
def test_r2plus1d_official_layout_and_shapes():
    # the (2+1)D factorisation: M = floor(t k^2 Cin Cout / (k^2 Cin + t Cout)), by hand
    assert SpatioTemporalConv(3, 64, (3, 7, 7)).mid_channels == 83  # 28224 / 339
    assert SpatioTemporalConv(64, 64, 3).mid_channels == 144  # 110592 / 768
    model = R2Plus1D(num_classes=N_CLS, base_channels=8, feature_dim=32).eval()
    tokens, feat = model.extract_feat(torch.randn(1, 3, 16, 112, 112))
    assert tokens.shape == (1, 32, 2, 7, 7)  # 98 tokens for 16 x 112 x 112 clips
    assert torch.allclose(feat, tokens.mean(dim=(2, 3, 4)), atol=1e-6)
    assert model(torch.randn(1, 3, 16, 112, 112)).shape == (1, N_CLS)
    for depth, sizes in DEPTHS.items():
        net = R2Plus1D(num_classes=2, depth=depth, base_channels=4)
        stages = [net.backbone.conv2, net.backbone.conv3, net.backbone.conv4, net.backbone.conv5]
        assert tuple(len(s) for s in stages) == sizes
    assert DEPTHS[10] == (1, 1, 1, 1)  # what the official `--model_depth 18` builds
    net = R2Plus1D(num_classes=2, layer_sizes=(1, 2, 1, 1), base_channels=4)
    assert len(net.backbone.conv3) == 2
    with pytest.raises(ValueError, match='depth must be one of'):
        R2Plus1D(num_classes=2, depth=50)
    with pytest.raises(ValueError, match=r'\[N, 3, T, H, W\]'):
        net(torch.randn(2, 3, 32, 32))


def test_modes_loss_predict_tensor():
    model = R2Plus1D(num_classes=N_CLS, base_channels=4, feature_dim=16).eval()
    inputs, samples = batch()
    logits = model(inputs, samples, mode='tensor')
    assert logits.shape == (4, N_CLS)
    loss = model(inputs, samples, mode='loss')['loss_cls']
    assert loss.item() == pytest.approx(F.cross_entropy(logits, torch.tensor([0, 1, 0, 2])).item(), rel=1e-6)
    out = model(inputs, samples, mode='predict')
    _, feat = model.extract_feat(inputs)
    for i, ds in enumerate(out):
        assert ds.pred_score.shape == (N_CLS,) and ds.pred_score.sum().item() == pytest.approx(1.0)
        assert torch.allclose(ds.pred_score, F.softmax(logits[i], 0), atol=1e-6)
        assert torch.allclose(ds.pred_feature, feat[i])
    with pytest.raises(KeyError, match="no 'audio' entry"):
        LogMelAudioCNN(num_classes=2, channels=(4,))(dict(video=inputs['video']))
    with pytest.raises(KeyError, match="'gt_label'"):
        model(inputs, [BaseDataElement() for _ in range(4)], mode='loss')
    with pytest.raises(ValueError, match='invalid mode'):
        model(inputs, samples, mode='nope')
    with pytest.raises(ValueError, match="input_key must be 'video' or 'audio'"):
        R2Plus1D(num_classes=2, input_key='rgb')


def test_mel_filterbank_triangles():
    fb = mel_filterbank(SR, 512, 64, 50.0, 8000.0)
    assert fb.shape == (257, 64)
    centres = mel_to_hz(torch.linspace(float(hz_to_mel(50.0)), float(hz_to_mel(8000.0)), 66))[1:-1]
    freqs = np.linspace(0, SR / 2, 257)
    for m in (0, 20, 63):
        # the peak bin is the FFT bin nearest the filter's centre (HTK: 2595 log10(1 + f / 700))
        assert abs(freqs[int(fb[:, m].argmax())] - float(centres[m])) <= SR / 512
        assert 0 < fb[:, m].max() <= 1.0
    assert float(hz_to_mel(1000.0)) == pytest.approx(2595 * math.log10(1 + 1000 / 700))
    with pytest.raises(ValueError, match='f_max'):
        mel_filterbank(SR, 512, 64, 50.0, 9000.0)


def test_log_mel_against_a_plain_dft():
    model = LogMelAudioCNN(num_classes=2, channels=(4, 8))
    spec = model.backbone.melspec
    g = torch.Generator().manual_seed(0)
    wave = torch.randn(1, 4000, generator=g)
    out = spec(wave)  # [1, 1, 64, frames]
    assert out.shape == (1, 1, 64, 4000 // 160 + 1)
    w = wave[0].numpy().astype(np.float64)
    t = 10  # an interior frame: samples centred on t * hop
    frame = w[t * 160 - 256: t * 160 + 256]
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(512) / 512)  # periodic Hann
    power = np.abs(np.fft.rfft(frame * window)) ** 2
    mel = power @ mel_filterbank(SR, 512, 64, 50.0, 8000.0).double().numpy()
    expected = 10 * np.log10(np.maximum(mel, 1e-10))
    assert np.allclose(out[0, 0, :, t].double().numpy(), expected, atol=1e-3)
    # a 1 kHz tone: the loudest mel band is the one whose centre is nearest 1 kHz
    tone = torch.sin(2 * math.pi * 1000 * torch.arange(8000) / SR)[None]
    loudest = int(spec(tone)[0, 0, :, 20].argmax())
    centres = mel_to_hz(torch.linspace(float(hz_to_mel(50.0)), float(hz_to_mel(8000.0)), 66))[1:-1]
    assert loudest == int((centres - 1000).abs().argmin())
    with pytest.raises(ValueError, match='too short'):
        spec(torch.randn(1, 100))


@pytest.mark.parametrize('dtype', [torch.float16, torch.bfloat16])
def test_log_mel_is_float32_and_finite_under_autocast(dtype):
    """--amp: fp16 autocast on CUDA, bf16 on CPU. In fp16 the mel projection's amin (1e-10) rounds to
    0, so silence and the empty bands of a pure tone gave log10(0) = -inf (NaN after BN); the front
    end runs in fp32 whatever the autocast, and equals the fp32 result."""
    spec = LogMelAudioCNN(num_classes=2, channels=(4, 8)).backbone.melspec
    t = torch.arange(8000) / SR
    waves = {'silence': torch.zeros(1, 8000), 'tone': torch.sin(2 * math.pi * 1000 * t)[None],
             'square': torch.sign(torch.sin(2 * math.pi * 440 * t))[None]}
    for name, wave in waves.items():
        ref = spec(wave)
        with torch.autocast('cpu', dtype=dtype):
            out = spec(wave)
        assert out.dtype == torch.float32 and torch.isfinite(out).all(), name
        assert torch.equal(out, ref), name


def test_audio_and_frame_networks_shapes():
    audio = LogMelAudioCNN(num_classes=N_CLS, channels=(4, 8, 16), embed_dim=12).eval()
    tokens, feat = audio.extract_feat(dict(audio=torch.randn(2, SR)))
    assert tokens.shape == (2, 16, 64 // 8, (SR // 160 + 1) // 8)  # [N, C, F', T']
    assert feat.shape == (2, 12) and audio(torch.randn(2, SR)).shape == (2, N_CLS)
    pooled = LogMelAudioCNN(channels=(4,)).neck(tokens)  # CNN14 pooling: mean over F, max + mean over T
    by_hand = tokens.mean(2).amax(2) + tokens.mean(2).mean(2)
    assert torch.allclose(pooled, by_hand)
    frames = FrameResNet(num_classes=N_CLS, base_channels=2, num_frames=4).eval()
    assert frames.backbone.frame_indices(16).tolist() == [2, 6, 10, 14]
    assert frames.backbone.frame_indices(3).tolist() == [0, 1, 2]
    video = torch.randn(2, 3, 16, 64, 64)
    tokens, feat = frames.extract_feat(video)
    assert tokens.shape == (2, 16, 4, 2, 2) and feat.shape == (2, 16)
    # each frame goes through the 2-D network on its own
    single = frames.backbone.layers(frames.backbone.stem(video[:, :, 6]))
    assert torch.allclose(tokens[:, :, 1], single, atol=1e-5)


def test_precomputed_embedding_teacher():
    inputs, samples = batch(embed_dim=6)
    teacher = PrecomputedEmbedding(embed_dim=6)
    out = teacher(inputs, samples, mode='tensor')
    assert torch.equal(out, torch.stack([s.teacher_embedding for s in samples]))
    assert not hasattr(teacher, 'head') or teacher.head is None
    probe = PrecomputedEmbedding(embed_dim=6, num_classes=N_CLS, with_head=True)
    assert probe(inputs, samples, mode='tensor').shape == (4, N_CLS)
    assert 'loss_cls' in probe(inputs, samples, mode='loss')
    with pytest.raises(KeyError, match="video_id='v0'.*'teacher_embedding'"):
        teacher(inputs, batch()[1], mode='tensor')
    with pytest.raises(ValueError, match='embed_dim=8'):
        PrecomputedEmbedding(embed_dim=8)(inputs, samples, mode='tensor')
    with pytest.raises(RuntimeError, match='has no head'):
        teacher(inputs, samples, mode='loss')
    assert NullTeacher()(inputs, samples) is None


# --- DistillationModel steps with each distiller -----------------------------------------------
D = 16
VIDEO_STUDENT = dict(type='R2Plus1D', _scope_='kdtoolbox', num_classes=N_CLS, base_channels=4, feature_dim=D)
AUDIO_STUDENT = dict(type='LogMelAudioCNN', _scope_='kdtoolbox', num_classes=N_CLS, channels=(4, D))
EMBEDDING_TEACHER = dict(type='PrecomputedEmbedding', _scope_='kdtoolbox', embed_dim=D)
AUDIO_TEACHER = dict(type='LogMelAudioCNN', _scope_='kdtoolbox', num_classes=N_CLS, channels=(4, 8), embed_dim=D)
FRAME_TEACHER = dict(type='FrameResNet', _scope_='kdtoolbox', num_classes=N_CLS, base_channels=2, num_frames=2)

CASES = {
    'mnfcsc_precomputed': (VIDEO_STUDENT, EMBEDDING_TEACHER, dict(type='MNFCSC', num_classes=N_CLS, embed_dim=D),
                           {'mnf.loss_triplet', 'mnf.loss_cls', 'mnf.loss_sparsity', 'csc.loss_contrastive'}),
    'mnfcsc_audio_teacher': (VIDEO_STUDENT, AUDIO_TEACHER, dict(type='MNFCSC', num_classes=N_CLS, embed_dim=D),
                             {'mnf.loss_triplet', 'csc.loss_contrastive'}),
    'mnfcsc_visual_to_audio': (AUDIO_STUDENT, FRAME_TEACHER, dict(type='MNFCSC', num_classes=N_CLS, embed_dim=D),
                               {'mnf.loss_triplet', 'csc.loss_contrastive'}),
    'kd': (VIDEO_STUDENT, AUDIO_TEACHER, dict(type='KD', temperature=4.0), {'kd.loss_kd'}),
    'kd_probe': (VIDEO_STUDENT, dict(EMBEDDING_TEACHER, num_classes=N_CLS, with_head=True), dict(type='KD'),
                 {'kd.loss_kd'}),
    'crd': (VIDEO_STUDENT, EMBEDDING_TEACHER,
            dict(type='CRD', num_data=10, student_channels=D, teacher_channels=D, feat_dim=8, num_negatives=32),
            {'crd.loss_crd'}),
    'rkd': (VIDEO_STUDENT, FRAME_TEACHER, dict(type='RKD'), {'rkd.loss_distance', 'rkd.loss_angle'}),
    'xkd': (VIDEO_STUDENT, dict(type='NullTeacher', _scope_='kdtoolbox'),
            dict(type='XKD', video_model=VIDEO_STUDENT, audio_model=AUDIO_STUDENT, out_dim=32, hidden_dim=16,
                 bottleneck_dim=8, audio_cls_weight=1.0),
            {'xkd.loss_cmkd', 'xkd.loss_align', 'xkd.loss_audio_cls'}),
}


def build(student, teacher, distiller):
    torch.manual_seed(0)
    return DistillationModel(student=student, teacher=teacher, distiller=distiller)


@pytest.mark.parametrize('case', sorted(CASES))
def test_distillation_step(case):
    student, teacher, distiller, expected = CASES[case]
    model = build(student, teacher, distiller)
    wrapper = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=0.05)))
    before_s = {n: p.detach().clone() for n, p in model.student.named_parameters()}
    before_t = {n: p.detach().clone() for n, p in model.teacher.state_dict().items()}
    before_d = {n: p.detach().clone() for n, p in model.distiller.named_parameters() if p.requires_grad}
    inputs, samples = batch(embed_dim=D)
    model.train()
    for _ in range(2):
        log = model.train_step(dict(inputs=inputs, data_samples=samples), wrapper)
    keys = {k[len('distill.'):] for k in log if k.startswith('distill.')}
    assert expected <= keys, keys
    assert 'loss_cls' in log and all(torch.isfinite(v).all() for v in log.values())
    assert any(not torch.equal(before_s[n], p) for n, p in model.student.named_parameters())
    assert all(torch.equal(before_t[n], v) for n, v in model.teacher.state_dict().items())  # frozen
    if before_d:
        assert any(not torch.equal(before_d[n], p) for n, p in model.distiller.named_parameters() if n in before_d)


def test_mnf_learning_rate_is_a_fraction_through_the_optim_wrapper():
    model = build(*CASES['mnfcsc_precomputed'][:3])
    wrapper = build_optim_wrapper(model, dict(
        optimizer=dict(type='Adam', lr=3e-4, weight_decay=5e-4),
        paramwise_cfg=dict(custom_keys={'distiller.mnf': dict(lr_mult=0.2)})))
    lr_of = {id(p): g['lr'] for g in wrapper.optimizer.param_groups for p in g['params']}
    mnf = [p for n, p in model.named_parameters() if n.startswith('distiller.mnf.')]
    assert len(mnf) > 0 and all(lr_of[id(p)] == pytest.approx(6e-5) for p in mnf)
    assert all(lr_of[id(p)] == pytest.approx(3e-4) for p in model.student.parameters())
    assert len(lr_of) == len(list(model.parameters()))  # the MNF has no parameter outside distiller.mnf


def test_xkd_ema_teachers_and_centres():
    student, teacher, distiller, _ = CASES['xkd']
    model = build(student, teacher, dict(distiller, ema_momentum=(0.5, 1.0), total_iters=100))
    xkd = model.distiller
    wrapper = build_optim_wrapper(model, dict(optimizer=dict(type='SGD', lr=0.1)))
    inputs, samples = batch()
    model.train()
    assert not xkd.video_teacher.training and not xkd.audio_head_ema.training
    assert not any(p.requires_grad for p in xkd.video_teacher.parameters())
    student_before = {n: p.detach().clone() for n, p in model.student.named_parameters()}
    model.train_step(dict(inputs=inputs, data_samples=samples), wrapper)  # step 1: teachers := students
    for n, p in xkd.video_teacher.named_parameters():
        assert torch.equal(p, student_before[n]), n
    assert xkd.loss_v2a.center.abs().sum() > 0 and xkd.loss_a2v.center.abs().sum() > 0
    teacher_before = {n: p.detach().clone() for n, p in xkd.video_teacher.named_parameters()}
    head_before = xkd.audio_head_ema.last_weight.detach().clone()
    student_now = {n: p.detach().clone() for n, p in model.student.named_parameters()}
    head_now = xkd.audio_head.last_weight.detach().clone()
    model.train_step(dict(inputs=inputs, data_samples=samples), wrapper)  # step 2 (iteration 0): m = 0.5
    for n, p in xkd.video_teacher.named_parameters():
        assert torch.allclose(p, 0.5 * teacher_before[n] + 0.5 * student_now[n], atol=1e-6), n
    assert torch.allclose(xkd.audio_head_ema.last_weight, 0.5 * head_before + 0.5 * head_now, atol=1e-6)
    # the EMA state is part of the checkpoint
    state = model.state_dict()
    assert 'distiller.ema_initialized' in state and any(k.startswith('distiller.video_teacher.') for k in state)
    with pytest.raises(RuntimeError, match='does not match the student'):
        bad = build(student, teacher, dict(distiller, video_model=dict(VIDEO_STUDENT, base_channels=2)))
        bad.train().train_step(dict(inputs=inputs, data_samples=samples),
                               build_optim_wrapper(bad, dict(optimizer=dict(type='SGD', lr=0.1))))


def test_plugin_registers_the_models_and_distillers():
    from kdtoolbox.plugins import load_plugins
    info = load_plugins()['av']
    assert info.status == 'loaded', info.error
    comps = set(info.components)
    for name in ('R2Plus1D', 'LogMelAudioCNN', 'FrameResNet', 'PrecomputedEmbedding', 'NullTeacher'):
        assert ('model', name) in comps
    for name in ('MNFCSC', 'KD', 'CRD', 'RKD', 'XKD'):
        assert ('distiller', name) in comps
    for name in ('MNFTripletLoss', 'CSCLoss', 'KDLoss', 'CRDLoss', 'RKDLoss', 'CrossModalDINOLoss', 'MMDLoss'):
        assert ('loss', name) in comps
