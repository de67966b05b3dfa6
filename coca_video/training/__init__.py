"""Pieces shared by the training tasks (pretraining, the probe, caption finetuning): the ``train.*`` keys
(:class:`TrainLoop`) and the optimiser's (:mod:`.optim`), checkpoints that resume exactly (:mod:`.checkpoints`), and
the one training loop (:func:`fit`, :mod:`.loop`). A task hands the loop a :class:`TrainTask` (its module, its
batches, its forward and loss); the loop owns everything else."""

from .checkpoints import (RESUMABLE_CHANGES, CheckpointManager, architecture_id, check_resumable, rng_state,
                          set_rng_state)
from .loop import (Batch, MetricLogger, Optimisation, TrainTask, best_epoch, best_record, best_validation, fit,
                   load_training_state, optimiser_step, save_training_state, wrap_ddp)
from .optim import (OptimConfig, TrainLoop, WeightEma, build_optimizer, build_scheduler, classification_loss_sum,
                    soft_targets)

__all__ = ["RESUMABLE_CHANGES", "Batch", "CheckpointManager", "MetricLogger", "Optimisation", "OptimConfig",
           "TrainLoop", "TrainTask", "WeightEma", "architecture_id", "best_epoch", "best_record", "best_validation",
           "build_optimizer", "build_scheduler", "check_resumable", "classification_loss_sum", "fit",
           "load_training_state", "optimiser_step", "rng_state", "save_training_state", "set_rng_state",
           "soft_targets", "wrap_ddp"]
