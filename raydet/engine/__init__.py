"""The training engine: one-epoch trainer, per-worker loop, optimizer, LR schedule, checkpoints, tracking, launcher.

Only ``launcher`` and ``train_loop`` talk to Ray; the rest is plain PyTorch.
"""
