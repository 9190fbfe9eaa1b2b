"""Stage 2: tokenize (instruction-aware), run the backbone, pool token states into embeddings."""
