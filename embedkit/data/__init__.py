"""Readers and validation for training pairs and BEIR folders, and the packaged real samples."""

from embedkit.data.beir import BeirData, load_beir, write_beir
from embedkit.data.readers import PairSet, load_corpus_texts, load_pairs, write_pairs
from embedkit.data.samples import SAMPLES, resolve_data_path, sample_path
from embedkit.data.schema import Pair

__all__ = [
    "SAMPLES",
    "BeirData",
    "Pair",
    "PairSet",
    "load_beir",
    "load_corpus_texts",
    "load_pairs",
    "resolve_data_path",
    "sample_path",
    "write_beir",
    "write_pairs",
]
