"""Evaluation of step judgements: the ProcessBench protocol and Best-of-N reranking."""
