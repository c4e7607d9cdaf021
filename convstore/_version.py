"""The version of convstore (one place: the package and its spans read it)."""

__version__ = "0.1.0"
