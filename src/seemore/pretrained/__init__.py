"""Pretrained parts from Hugging Face model folders (config.json and safetensors weights,
read directly: transformers is not needed): decoders of the Llama family so far."""
