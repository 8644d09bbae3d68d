"""Training: ``llava.train.train.train()`` (entry point), ``llava_trainer.LLaVATrainer``, the argument
dataclasses in ``llava.train.arguments``. Modules are imported explicitly (nothing heavy here)."""
