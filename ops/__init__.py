"""chroma-ops: inspect and safely repair Chroma persist directories."""

__version__ = "0.1.0"
