"""The LLM2Vec paper's analyses as PNG plots: future-token capture (Fig. 4), causal vs bidirectional states (Fig. 5)."""
