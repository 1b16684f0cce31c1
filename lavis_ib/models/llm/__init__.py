"""The frozen LLM behind a Q-Former: the families (decoder-only, encoder-decoder), candidate
scoring with a prefix trie, and the memory options LoRA and quantisation."""
