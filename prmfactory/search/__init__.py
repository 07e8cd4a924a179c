"""The mcts stage: search solution trees with a policy LLM and estimate step-prefix values.

Reads an ``--input`` file (problems), writes ``problems``, ``nodes`` and ``questions`` shards.
Strategies: ``omegaprm`` (Luo et al. 2024) and ``mc`` (Math-Shepherd, Wang et al. 2024).
"""
