"""Autograder for the 医療とAI・ビッグデータ応用 notebooks (課題8: data augmentation with Keras)."""

__version__ = "0.1.0"
