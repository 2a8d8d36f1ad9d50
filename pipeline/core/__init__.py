"""Shared plumbing: the typed config, project paths, one-line errors, atomic files, locks, MLflow set-up, figures."""
