"""Base models, LoRA configuration, the adapter <-> flat vector mapping and the demo datasets."""
