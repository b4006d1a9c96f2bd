"""m4i: a reproducible implementation of the M^4I membership-inference study."""
__version__ = "0.1.0"
