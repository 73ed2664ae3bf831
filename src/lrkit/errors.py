"""Errors that every layer of lrkit raises. This module imports nothing from lrkit, so the
lowest layer (:mod:`lrkit.data`) uses it as well as the method registry and the CLI."""

from __future__ import annotations


class MissingExtraError(ImportError):
    """An optional dependency is not installed. The message says what needs it, the package
    and the ``pip install 'lrkit[extra]'`` that provides it; the CLI prints it as one line and
    exits with status 2."""
