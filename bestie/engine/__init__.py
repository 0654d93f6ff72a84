"""Training infrastructure shared by every training stage.

- :mod:`bestie.engine.checkpoint`: resumable checkpoints (model, optimiser, scheduler,
  scaler, RNG states, progress) and final model files, all loadable with
  ``torch.load(weights_only=True)``.
- :mod:`bestie.engine.logger`: the CSV training log and the tqdm progress bar.
- :mod:`bestie.engine.classifier_trainer`: the CAM/PAM classifier's training loop (SPEC §1.2).
"""
