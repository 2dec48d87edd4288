"""Models: the embedded tiny model and (next) the adapters that drive Hugging Face VLM families."""
