"""segrepro.engine layer."""
