"""ossimport-dist: OssImport's job model, re-implemented in Python."""

__version__ = "0.1.0"
