"""Reproduce the paper's study: train both architectures per task, attack, explain, publish."""

from training.reproduce.config import StudyConfig, load_study
from training.reproduce.runner import StudyFolders, run_study

__all__ = ["StudyConfig", "StudyFolders", "load_study", "run_study"]
