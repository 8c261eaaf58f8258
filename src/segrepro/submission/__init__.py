"""segrepro.submission layer."""
