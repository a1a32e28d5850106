"""Incremental semantic dedup of videos by their short-caption embeddings."""

from operators.dedup.config import DedupConfig
from operators.dedup.index import Decision, GreedyDedupIndex
from operators.dedup.operator import ResumeState, SemanticDedup

__all__ = ["Decision", "DedupConfig", "GreedyDedupIndex", "ResumeState", "SemanticDedup"]
