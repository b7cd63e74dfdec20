"""Evaluation: metrics (accuracy, mean class accuracy, macro-F1, confusion matrix),
figures, and the paper's studies (Table 5 ablation, Fig. 6 iterations)."""

from lrdif.evaluate.metrics import confusion_matrix, run_model, summarize

__all__ = ["confusion_matrix", "run_model", "summarize"]
