"""train-prm: discriminative (token classification) and generative (critique) process reward models."""
