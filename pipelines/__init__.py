"""Kubeflow pipelines of segrepro, installed as ``segrepro_pipelines`` (see its cityscapes_benchmark)."""
