"""The built-in audio-visual plugin: MNF + CSC, KD / CRD / RKD / XKD baselines, AV data and metrics."""
