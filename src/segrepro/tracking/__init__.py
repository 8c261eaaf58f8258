"""segrepro.tracking layer."""
