"""segrepro.data layer."""
