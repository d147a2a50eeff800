"""The shared training core: supervised fine-tuning on the prompts the pipeline builds.

Every method that trains (IPA fine-tuning, FiD, OPPU, ROPG, RSPG) builds its examples here
(`data`), trains with transformers' Trainer (`trainer`: loss on the gold only, length-grouped
batches, gradient accumulation, bf16 where the device has it, dev evaluation with the task's
official metric, the best checkpoint kept, checkpoints that count only once complete), and
gets back a TrainResult. torch, transformers and peft load only when training starts.
"""
