"""Files that survive crashes: atomic writes; checkpoints as safetensors plus JSON, no pickle."""
