r"""Training: ``train(cfg, run_dir)`` trains one VAE and writes its run directory.

A pure function of the composed config and the run directory, so that tests call it
directly and the ``vaeflow train`` command is a thin shim around it; the
:class:`~vaeflow.training.loop.Trainer` behind it is made of parts with one job each
(see :mod:`vaeflow.training.loop`).
"""

from vaeflow.training.checkpoints import RESUMABLE_KEYS, check_same_model, resume_checkpoint
from vaeflow.training.hooks import (
    HISTORY_FILE,
    EarlyStopping,
    HistoryHook,
    Hook,
    ProgressHook,
    TensorBoardHook,
)
from vaeflow.training.loop import CHECKPOINT_VERSION, Trainer, train
from vaeflow.training.settings import build_optimizer, check_settings
from vaeflow.training.signals import Interrupted
from vaeflow.training.step import NonFiniteGuard, StepResult, TrainStep
from vaeflow.training.validation import EVAL_SEED, Validator, test_figures, validation_elbo

__all__ = [
    "CHECKPOINT_VERSION",
    "EVAL_SEED",
    "HISTORY_FILE",
    "RESUMABLE_KEYS",
    "EarlyStopping",
    "HistoryHook",
    "Hook",
    "Interrupted",
    "NonFiniteGuard",
    "ProgressHook",
    "StepResult",
    "TensorBoardHook",
    "TrainStep",
    "Trainer",
    "Validator",
    "build_optimizer",
    "check_same_model",
    "check_settings",
    "resume_checkpoint",
    "test_figures",
    "train",
    "validation_elbo",
]
