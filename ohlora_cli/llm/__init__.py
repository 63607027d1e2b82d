"""SFT + LoRA fine-tuning with trl (backends hf and unsloth). Import-light: torch loads on use."""
