"""Datasets: the generated shapes detection dataset (the default data, no download)."""
from .shapes import CLASSES, ShapesDataset, make_shapes_dataset, shapes_dataset_is_current

__all__ = ['CLASSES', 'ShapesDataset', 'make_shapes_dataset', 'shapes_dataset_is_current']
