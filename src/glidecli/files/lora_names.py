"""The file names of a LoRA adapter folder in PEFT's format (files/lora_file.py reads it);
declared apart so that fetching (fetch.py) needs no torch."""

from __future__ import annotations

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
