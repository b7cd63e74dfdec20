"""Evaluation: figures and the paper's studies (Table 5 ablation, Fig. 6 iterations).

The metrics themselves (accuracy, mean class accuracy, macro-F1, confusion matrix,
batched inference) live in :mod:`lrdif.metrics`, below both training and evaluation.
"""
