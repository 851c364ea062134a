"""Training: recipe config, task-homogeneous batching, collation, the HF-Trainer glue, checkpoints and model cards.

Entry points: :func:`embedkit.training.config.load_recipe` (validate a recipe) and
:func:`embedkit.training.runner.run_recipe` (run it; what ``embedkit train`` calls). GradCache and the
distributed gather live in :mod:`embedkit.training.gradcache` / :mod:`embedkit.training.distributed`.
"""
