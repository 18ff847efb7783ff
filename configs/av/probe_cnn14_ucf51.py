# A linear probe (Linear(512, 51)) on the precomputed CNN14 audio embeddings of UCF51: the teacher
# logits of the KD baseline (the embeddings themselves carry no logits). Train it first:
#   python tools/train.py configs/av/probe_cnn14_ucf51.py
_base_ = ['./_base_/ucf51_av.py', './_base_/av_runtime.py']

model = dict(type='PrecomputedEmbedding', embed_dim=512, num_classes=51, with_head=True,
             data_preprocessor=dict(type='AVDataPreprocessor'))
train_cfg = dict(max_epochs=50)
custom_hooks = []
test_evaluator = [dict(type='VideoAccuracy', topk=(1, 5))]
