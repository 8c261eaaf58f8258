"""segrepro.evaluation layer."""
