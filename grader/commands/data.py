"""`grader data`: provision Fashion-MNIST into the project's Keras cache."""

from __future__ import annotations

from pathlib import Path

from grader.assignment.data import DataInfo, provision


def main(*, keras_home: Path, try_keras_download: bool = True) -> DataInfo:
    return provision(keras_home, try_keras_download=try_keras_download)
