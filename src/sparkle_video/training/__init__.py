"""Fine-tuning ``SparkleEditPipeline`` on Sparkle (the Kiwi-Sparkle recipe) with accelerate and peft.

Modules, one per stage: ``loss`` (the flow-matching objective, pure functions), ``step`` (the training
step through the pipeline's own methods, and which parameters train), ``data`` (bucketed, resumable
pairs at the model's working size), ``loop`` (the accelerate loop, checkpoints, outputs) and ``export``
(Kiwi-Edit's checkpoint format and the ``save_pretrained`` folder). Needs the ``[train]`` extra.
"""

from __future__ import annotations

import os

from .data import BucketedPairStream, ShapePolicy, StreamPosition, collator_preprocess, prefetch, sparkle_rows
from .export import kiwi_key, kiwi_state_dict, merge_lora_state, pipeline_from_state, save_kiwi_checkpoint
from .loop import TrainConfig, Trainer, TrainResult, checkpoint_dirs, micro_step_seed, train
from .loss import TrainingTimesteps, flow_matching_loss, noisy_latents, timestep_weights, training_timesteps
from .step import SparkleTrainingModule, configure_trainable

#: Example ``accelerate launch --config_file`` files shipped with the package.
CONFIG_DIR = os.path.join(os.path.dirname(__file__), "configs")

__all__ = [
    "CONFIG_DIR",
    "BucketedPairStream",
    "ShapePolicy",
    "SparkleTrainingModule",
    "StreamPosition",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingTimesteps",
    "checkpoint_dirs",
    "collator_preprocess",
    "configure_trainable",
    "flow_matching_loss",
    "kiwi_key",
    "kiwi_state_dict",
    "merge_lora_state",
    "micro_step_seed",
    "noisy_latents",
    "pipeline_from_state",
    "prefetch",
    "save_kiwi_checkpoint",
    "sparkle_rows",
    "timestep_weights",
    "train",
    "training_timesteps",
]
