"""selectflow: select the subset of a raw corpus worth training on, and prove why."""

__version__ = "0.1.0"
