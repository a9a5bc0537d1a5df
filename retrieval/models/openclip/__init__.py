"""open_clip models in torch (the `[torch]` extra; nothing else imports this package at module level): building
them by name or checkpoint, running them (bf16/fp16, CUDA, training), and writing them as model folders."""
