"""Pretrained parts from Hugging Face folders (config.json and safetensors weights, read
directly: transformers is not needed): Llama-family decoders (decoder.py) and SigLIP and
CLIP vision towers (vision.py)."""
