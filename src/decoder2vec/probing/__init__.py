"""Word-level linear probing of frozen token representations (POS, chunking, NER)."""

from decoder2vec.probing.corpora import TaggedSentence, load_tagged, read_brown, read_conll
from decoder2vec.probing.probe import probe_scores, run_probe, word_features

__all__ = [
    "TaggedSentence",
    "load_tagged",
    "probe_scores",
    "read_brown",
    "read_conll",
    "run_probe",
    "word_features",
]
