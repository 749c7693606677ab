"""The training engine: one-epoch trainer, per-worker loop, LR schedule, checkpoints, evaluation, tracking, launcher.

Only ``launcher``, ``train_loop`` and ``recorder`` talk to Ray; the rest is plain PyTorch.
"""
