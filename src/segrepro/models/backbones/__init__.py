"""segrepro.models.backbones layer."""
