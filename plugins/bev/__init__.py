"""The built-in BEV / LiDAR / cross-modal 3D plugin (mmdet3d, spconv)."""
