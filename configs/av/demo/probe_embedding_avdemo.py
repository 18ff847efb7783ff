# A linear probe on the precomputed teacher embeddings (PrecomputedEmbedding with a head): gives
# the logit-based baseline (KD) teacher logits. Train it first, then kd_r2plus1d_avdemo.py loads it:
#   python tools/train.py configs/av/demo/probe_embedding_avdemo.py
_base_ = ['./_base_/av_demo_data.py', './_base_/av_demo_runtime.py']

model = dict(type='PrecomputedEmbedding', embed_dim=128, num_classes=4, with_head=True,
             data_preprocessor=dict(type='AVDataPreprocessor'))
custom_hooks = []  # no retrieval: the features are the fixed embeddings
val_evaluator = [dict(type='VideoAccuracy', topk=(1,))]
test_evaluator = val_evaluator
default_hooks = dict(checkpoint=dict(interval=30, save_best=None, max_keep_ckpts=1))
