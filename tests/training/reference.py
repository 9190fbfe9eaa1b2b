"""Full-vocabulary MNTP loss and accuracy: the plain reference the training path (which runs the LM
head only on masked positions, ``training/modules.py`` ``MNTPModel``) is tested against."""

import torch
import torch.nn.functional as F

from decoder2vec.training.losses import shift_labels
from decoder2vec.training.masking import IGNORE_INDEX


def mntp_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over masked tokens; ``logits`` (B, L, V) are outputs, ``labels`` unshifted (B, L)."""
    targets = shift_labels(labels)
    return F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX)


def mntp_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """``(correct, count)`` of masked tokens whose argmax prediction (from position i-1) is right."""
    targets = shift_labels(labels)
    keep = targets != IGNORE_INDEX
    correct = (logits.argmax(-1)[keep] == targets[keep]).sum()
    return int(correct), int(keep.sum())
