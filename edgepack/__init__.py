"""edgepack: compress a trained model, emit edge artifacts, verify, profile and package them."""

__version__ = "0.1.0"
