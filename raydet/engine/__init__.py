"""The training engine: per-worker loop, optimizer, LR schedule, checkpoints, tracking, launcher.

Only ``launcher`` and ``train_loop`` talk to Ray; the rest is plain PyTorch.
"""
