"""Training data: corpora (text, JSONL, offline Wikipedia), MNTP chunking, SimCSE sentences, supervised pairs."""
