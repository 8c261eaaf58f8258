"""Kubeflow pipelines of segrepro (see pipelines.cityscapes_benchmark)."""
