"""Child-process scripts and the runner of the TensorFlow-vs-JAX backend tests."""
