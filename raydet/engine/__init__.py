"""The training engine: one-epoch trainer, the worker loop's hooks, per-worker loop, LR schedule, checkpoints,
evaluation, tracking, launcher.

Only ``launcher``, ``train_loop``, ``recorder`` and ``batch_inference`` talk to Ray; the rest is plain PyTorch.
"""
