"""chatling's training package: chat logs and VODs to (context -> chat message) pairs,
LoRA fine-tunes and their evaluation. (Built in the training issue.)"""
