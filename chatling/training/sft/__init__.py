"""Supervised fine-tuning of a LoRA adapter on pairs, with the live bot's prompt."""
