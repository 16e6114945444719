"""Boomerang: a daemon that brings e-commerce customers back."""

from importlib.metadata import PackageNotFoundError, version

from boomerang.hookspecs import hookimpl

try:
    __version__ = version("boomerang")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__", "hookimpl"]
