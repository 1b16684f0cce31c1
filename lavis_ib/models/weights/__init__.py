"""Weight files and formats: the hub and Hugging Face directories, BLIP-2 and LAVIS checkpoint
files, parameter-name maps between them, the load report and tokenizers."""
