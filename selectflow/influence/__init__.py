"""Influence scoring of training documents on a reference set (EK-FAC curvature, projected per-chunk gradients)."""

from selectflow.influence.model import InfluenceError, load_model_and_tokenizer
from selectflow.influence.scorer import InfluenceScorer, chunk_token_ids

__all__ = ["InfluenceError", "InfluenceScorer", "chunk_token_ids", "load_model_and_tokenizer"]
