"""The shared training core: one trainer, handed an objective per method.

`trainer.train(objective, config, work_dir)` trains what a `TrainingObjective`
(`objective.py`) describes (its model, data, collator, loss, dev evaluation, save) with
transformers' Trainer: length-grouped batches, gradient accumulation, bf16 where the device has
it, dev evaluation that picks the best checkpoint, checkpoints that count only once complete,
resume, torchrun. The objectives: IPA fine-tuning (`sft.py`), Fusion-in-Decoder (`fid.py`);
`adapters.AdapterTrainer` trains many LoRA adapters in turn on one loaded base (OPPU). torch,
transformers and peft load only when training starts.
"""
