"""``guardstream finetune``: LoRA-train a guard adapter on eval rows (``data`` augments, ``train`` trains)."""
