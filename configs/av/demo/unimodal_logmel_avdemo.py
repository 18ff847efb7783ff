# The audio student of the visual -> audio demo alone (no teacher), for comparison with
# mnfcsc_logmel_v2a_avdemo.py.
#   python tools/train.py configs/av/demo/unimodal_logmel_avdemo.py
_base_ = ['./_base_/av_demo_data.py', './_base_/av_demo_runtime.py']

model = dict(type='LogMelAudioCNN', num_classes=4, input_key='audio', channels=(16, 32, 64, 128),
             sample_rate=16000, data_preprocessor=dict(type='AVDataPreprocessor'))
