"""segrepro: train, evaluate and compare published semantic-segmentation methods reproducibly."""

__version__ = "0.1.0"
