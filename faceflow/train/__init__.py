"""Training: config (defaults + validation), LR schedule, the eager/nn.Graph engine, logs, the per-process worker."""
