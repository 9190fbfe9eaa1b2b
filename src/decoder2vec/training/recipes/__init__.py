"""Stage recipes: wire a backbone, data and the training components into a run (one file per stage)."""
