"""The model side behind ``workers.engine.Engine``: the in-process engine, replica actors and model pools.

Nothing here is imported at package level, so ``import workers.serving`` pulls in neither ray nor torch.
"""
