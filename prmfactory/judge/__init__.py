"""The judge stage: an LLM grades solution steps, with majority votes over samples."""
