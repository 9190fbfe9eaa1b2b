"""Stage 3: write encoders in formats other tools load (sentence-transformers)."""
