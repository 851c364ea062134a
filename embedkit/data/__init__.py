"""Readers and validation for training pairs and BEIR folders."""

from embedkit.data.schema import Pair

__all__ = ["Pair"]
